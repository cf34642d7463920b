//! Issue 13 items 3 and 4: images absent on the instance are pulled from a real private
//! registry (`docker-registry` with htpasswd, tests/common/registry.rs) with the login of a
//! Secret named by `repositoryCredentials`; a wrong password or none fails the task with
//! `CannotPullContainerError` and the registry's message; the agent's
//! `--image-pull-behavior` decides when a cached image is used.

mod common;

use std::time::Duration;

use common::berth::*;
use common::manifests::*;
use common::registry::Registry;
use serde_json::Value;

fn login_secret(name: &str, user: &str, password: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1\nkind: Secret\nmetadata: {{name: {name}}}\nspec:\n  data: {{username: \"{user}\", password: \"{password}\"}}\n"
    )
}

/// A service of one `sleep` container of `image`, pulled with `creds` (a Secret's name).
fn pulled_service(name: &str, image: &str, creds: Option<&str>) -> String {
    let mut c = container_of_image("app", image)
        .memory(32)
        .stop_timeout(1)
        .with("command: [\"sleep\", \"3600\"]");
    if let Some(s) = creds {
        c = c.with(&format!(
            "repositoryCredentials: {{credentialsParameter: {s}}}"
        ));
    }
    documents(&[
        task_definition(name, [c]).to_string(),
        service(name, name, 1, &[]),
    ])
}

fn apply_docs(b: &Berth, docs: &[String]) {
    b.apply(manifest_dir(&[("m.yaml", documents(docs))]).path());
}

fn stopped_task(b: &Berth, service: &str) -> Value {
    wait_for(
        &format!("a stopped task of {service}"),
        Duration::from_secs(90),
        || {
            b.get_json(&["tasks", "--service", service])
                .as_array()?
                .iter()
                .find(|t| t["status"]["lastStatus"] == "STOPPED")
                .cloned()
        },
    )
}

/// The task failed to start on its pull: `CannotPullContainerError: …`; the reason.
fn pull_failure(b: &Berth, service: &str) -> String {
    let t = stopped_task(b, service);
    assert_eq!(t["status"]["stopCode"], "TaskFailedToStart", "{t}");
    let reason = t["status"]["stoppedReason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");
    eprintln!("{service}: stoppedReason: {reason}");
    reason
}

#[test]
fn pulls_with_a_secret_and_fails_clearly_without_one() {
    let reg = Registry::start();
    let b = Berth::up(None);
    let u = unique("pull");
    let (good, bad) = (format!("{u}-login"), format!("{u}-wrong"));
    let image_a = reg.push_test_image(&format!("{u}-a"));
    let image_b = reg.push_test_image(&format!("{u}-b"));
    assert!(!Registry::present_locally(&image_a));
    apply_docs(
        &b,
        &[
            login_secret(&good, &reg.user, &reg.password),
            login_secret(&bad, &reg.user, "not-the-password"),
        ],
    );

    // Absent here, in the registry only: pulled with the Secret's login, then RUNNING.
    let ok = format!("{u}-ok");
    apply_docs(&b, &[pulled_service(&ok, &image_a, Some(&good))]);
    b.wait_running(&ok, 1, Duration::from_secs(120));
    assert!(
        Registry::present_locally(&image_a),
        "berth pulled {image_a}"
    );

    // A wrong password: the registry's refusal, and the task counts as failed to start.
    let wrong = format!("{u}-wrongpw");
    apply_docs(&b, &[pulled_service(&wrong, &image_b, Some(&bad))]);
    let reason = pull_failure(&b, &wrong);
    assert!(
        reason.contains("unauthorized") || reason.contains("authentication required"),
        "the registry's message: {reason}"
    );
    assert!(!Registry::present_locally(&image_b));
    let svc = b.wait_json(
        "the failed start counted",
        Duration::from_secs(60),
        &["service", &wrong],
        |s| {
            s["status"]["deployments"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["failedTasks"].as_u64() >= Some(1)))
        },
    );
    assert!(!svc.to_string().contains(&reg.password));

    // No credentials: nothing pulls.
    let anon = format!("{u}-anon");
    apply_docs(&b, &[pulled_service(&anon, &image_b, None)]);
    let reason = pull_failure(&b, &anon);
    assert!(
        reason.contains("no basic auth credentials") || reason.contains("unauthorized"),
        "{reason}"
    );

    // `default` behaviour: a failed pull of an image the instance has uses the cached one.
    let cached = format!("{u}-cached");
    apply_docs(&b, &[pulled_service(&cached, &image_a, Some(&bad))]);
    b.wait_running(&cached, 1, Duration::from_secs(90));

    // The password is in no log line of berth's.
    assert!(!b.log().contains(&reg.password));
    for s in [&ok, &wrong, &anon, &cached] {
        remove_containers_with_label(&format!("berth.service={s}"));
    }
}

#[test]
fn prefer_cached_uses_the_local_image_and_always_pulls() {
    let reg = Registry::start();
    let u = unique("beh");
    let bad = format!("{u}-wrong");
    let good = format!("{u}-login");
    let secrets = [
        login_secret(&good, &reg.user, &reg.password),
        login_secret(&bad, &reg.user, "not-the-password"),
    ];

    // prefer-cached: absent → pulled (and a wrong password fails); present → no pull at all.
    let pc = Berth::up_with(
        None,
        vec!["--image-pull-behavior".into(), "prefer-cached".into()],
    );
    apply_docs(&pc, &secrets);
    let image_c = reg.push_test_image(&format!("{u}-c"));
    let absent = format!("{u}-pc-absent");
    apply_docs(&pc, &[pulled_service(&absent, &image_c, Some(&bad))]);
    pull_failure(&pc, &absent);
    std::process::Command::new("docker")
        .args(["tag", IMAGE, &image_c])
        .output()
        .unwrap();
    let present = format!("{u}-pc-present");
    apply_docs(&pc, &[pulled_service(&present, &image_c, Some(&bad))]);
    pc.wait_running(&present, 1, Duration::from_secs(90));

    // always: a cached image does not save a failed pull; a good login pulls and runs.
    let al = Berth::up_with(None, vec!["--image-pull-behavior".into(), "always".into()]);
    apply_docs(&al, &secrets);
    let image_d = reg.push_test_image(&format!("{u}-d"));
    std::process::Command::new("docker")
        .args(["tag", IMAGE, &image_d])
        .output()
        .unwrap();
    let refused = format!("{u}-al-wrong");
    apply_docs(&al, &[pulled_service(&refused, &image_d, Some(&bad))]);
    let reason = pull_failure(&al, &refused);
    assert!(
        reason.contains("unauthorized") || reason.contains("authentication"),
        "{reason}"
    );
    let pulled = format!("{u}-al-ok");
    apply_docs(&al, &[pulled_service(&pulled, &image_d, Some(&good))]);
    al.wait_running(&pulled, 1, Duration::from_secs(90));

    // once: pulled the first time; later tasks of this agent use it without asking the
    // registry (a wrong password then changes nothing, and no pull is even tried).
    let once = Berth::up_with(None, vec!["--image-pull-behavior".into(), "once".into()]);
    apply_docs(&once, &secrets);
    let image_e = reg.push_test_image(&format!("{u}-e"));
    let first = format!("{u}-once-1");
    apply_docs(&once, &[pulled_service(&first, &image_e, Some(&good))]);
    once.wait_running(&first, 1, Duration::from_secs(90));
    assert!(Registry::present_locally(&image_e));
    let second = format!("{u}-once-2");
    apply_docs(&once, &[pulled_service(&second, &image_e, Some(&bad))]);
    once.wait_running(&second, 1, Duration::from_secs(90));
    assert!(
        !once.log().contains("pull failed"),
        "once pulled again: {}",
        tail(&once.log(), 20)
    );
    for s in [&absent, &present, &refused, &pulled, &first, &second] {
        remove_containers_with_label(&format!("berth.service={s}"));
    }
}
