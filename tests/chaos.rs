//! `berth bench chaos` in CI's short form (issue 15): two minutes of containers, agents,
//! control planes and an etcd member killed at random on a real cluster; the bench itself
//! checks the invariants throughout and exits non-zero on any violation.

mod common;

use std::process::Command;

use common::berth::*;

#[test]
fn two_minutes_of_chaos_break_no_invariant() {
    require_image();
    let out = Command::new(berth_bin())
        .args(["bench", "chaos", "--minutes", "2"])
        .output()
        .expect("run berth bench chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "chaos found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 lost"), "{stdout}");
    assert!(stdout.contains("desired counts restored"), "{stdout}");
}
