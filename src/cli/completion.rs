//! `berth completion bash|zsh|fish`: shell completion scripts generated from the CLI's own
//! definition (clap_complete), so they never drift from the flags.

use clap_complete::Shell;

/// The completion script for `shell`, from the CLI's definition (`Cli::command()`).
pub fn script(shell: Shell, mut cmd: clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "berth", &mut out);
    out
}

/// Print the script (a closed pipe, as in `berth completion bash | head`, is not an error).
pub fn print(shell: Shell, cmd: clap::Command) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().write_all(&script(shell, cmd)) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// How to install the script, per shell (printed by `berth completion --help`).
pub const INSTALL: &str = "\
Examples:
  bash:  berth completion bash > ~/.local/share/bash-completion/completions/berth
  zsh:   berth completion zsh > \"${fpath[1]}/_berth\"   (then restart zsh)
  fish:  berth completion fish > ~/.config/fish/completions/berth.fish
  now:   source <(berth completion bash)";
