//! Manifest parsing, validation and loading (applying is tests/apply.rs).
//!
//! Every bad input must give an error naming the file, the document and the field (and the
//! line where the parser knows it).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use berth::manifest::{
    load_path, parse_str, validate, Document, ManifestError, Resource, MAX_FILE_BYTES,
};
use berth::model::Kind;
use common::manifests::*;

// ----- fixtures --------------------------------------------------------------------------------

fn parse_err(text: &str, file: &str) -> Vec<ManifestError> {
    match parse_str(text, file) {
        Ok(docs) => panic!("expected errors, parsed {} documents", docs.len()),
        Err(e) => e,
    }
}

// ----- good manifests ------------------------------------------------------------------------

#[test]
fn yaml_multi_document() {
    let docs = parse_str(GOOD_YAML, "manifests/app.yaml").expect("parses");
    assert_eq!(docs.len(), 4, "empty documents are skipped");
    assert_eq!(docs[0].kind(), Kind::Cluster);
    assert_eq!(docs[0].source.document, 1);
    assert_eq!(docs[1].kind(), Kind::TaskDefinition);
    assert_eq!(
        docs[1].source.document, 3,
        "documents are counted as written"
    );
    assert_eq!(docs[2].kind(), Kind::Service);
    assert_eq!(docs[2].name(), "web");
    assert_eq!(docs[3].kind(), Kind::TargetGroup);
    let Resource::TaskDefinition(td) = &docs[1].resource else {
        panic!()
    };
    assert_eq!(td.spec.task_role.as_deref(), Some("web-reader"));
    assert_eq!(
        td.spec.container_definitions[0].environment[1].value,
        "8080"
    );
    assert_eq!(
        td.metadata.labels.get("team").map(String::as_str),
        Some("a")
    );
    assert!(validate(&docs).is_empty(), "{}", show(&validate(&docs)));
    let Resource::Service(s) = &docs[2].resource else {
        panic!()
    };
    assert_eq!(s.spec.desired_count, 3);
    assert_eq!(s.spec.cluster, "prod");
}

#[test]
fn the_repo_examples_parse_and_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    if dir.is_dir() {
        let docs = load_path(&dir).unwrap_or_else(|e| panic!("{}", show(&e)));
        assert!(!docs.is_empty());
    }
}

#[test]
fn json_object_and_array() {
    let one = r#"{"apiVersion":"berth.dev/v1","kind":"Service","metadata":{"name":"web"},
                 "spec":{"taskDefinition":"web:3","desiredCount":1}}"#;
    let docs = parse_str(one, "svc.json").unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].source.document, 1);
    let arr = format!(
        "[{one}, {{\"apiVersion\":\"berth.dev/v1\",\"kind\":\"Cluster\",\"metadata\":{{\"name\":\"c\"}}}}]"
    );
    // content sniffing: no extension
    let docs = parse_str(&arr, "-").unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1].kind(), Kind::Cluster);
    assert_eq!(docs[1].source.document, 2);
}

#[test]
fn plain_ecs_task_definition_json() {
    let docs = parse_str(ECS_JSON, "ecs/api.json").unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(docs.len(), 1);
    let Resource::TaskDefinition(td) = &docs[0].resource else {
        panic!("not a task definition")
    };
    assert_eq!(td.metadata.name, "api");
    assert_eq!(td.spec.cpu, Some(256), "string cpu accepted");
    assert_eq!(td.spec.memory, Some(512));
    assert_eq!(
        td.spec.task_role.as_deref(),
        Some("arn:aws:iam::123456789012:role/api-reader"),
        "taskRoleArn is an alias of taskRole"
    );
    assert!(td.spec.container_definitions[0].log_configuration.is_some());
    assert!(validate(&docs).is_empty(), "{}", show(&validate(&docs)));

    // The describe-task-definition envelope, with tags.
    let wrapped = format!(
        "{{\"taskDefinition\": {ECS_JSON}, \"tags\": [{{\"key\": \"team\", \"value\": \"a\"}}]}}"
    );
    let docs = parse_str(&wrapped, "ecs/api-described.json").unwrap();
    assert_eq!(docs[0].name(), "api");

    // Task-level tags become labels.
    let tagged = ECS_JSON.replacen(
        "\"family\": \"api\",",
        "\"family\": \"api\", \"tags\": [{\"key\": \"team\", \"value\": \"a\"}],",
        1,
    );
    let docs = parse_str(&tagged, "api.json").unwrap();
    assert_eq!(
        docs[0]
            .resource
            .metadata()
            .labels
            .get("team")
            .map(String::as_str),
        Some("a")
    );
}

#[test]
fn ecs_json_errors_point_into_the_ecs_text() {
    let bad = ECS_JSON.replace("\"image\": \"local/busybox:1\",", "\"imagee\": \"x\",");
    let errors = parse_err(&bad, "ecs/api.json");
    let e = find(&errors, "spec.containerDefinitions[0].imagee");
    assert!(e.message.contains("did you mean `image`"), "{e}");
    assert_eq!(e.document, Some(1));
    assert!(e.line.is_some(), "located in the JSON text: {e}");
}

#[test]
fn document_round_trips_through_json() {
    let docs = parse_str(GOOD_YAML, "a.yaml").unwrap();
    let json = serde_json::to_string(&docs).unwrap();
    let back: Vec<Document> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, docs);
    // A resource serializes as the plain object.
    let v = serde_json::to_value(&docs[2].resource).unwrap();
    assert_eq!(v["kind"], "Service");
    assert_eq!(v["metadata"]["name"], "web");
}

// ----- bad manifests ---------------------------------------------------------------------------

#[test]
fn broken_yaml() {
    let text = "apiVersion: berth.dev/v1\nkind: Service\nmetadata: {name: web\nspec: {}\n";
    let errors = parse_err(text, "m/web.yaml");
    assert_eq!(errors.len(), 1, "{}", show(&errors));
    let e = &errors[0];
    assert_eq!(e.file, "m/web.yaml");
    assert_eq!(e.document, Some(1));
    assert!(e.line.is_some(), "{e}");
    let s = e.to_string();
    assert!(s.starts_with("m/web.yaml: document 1: "), "{s}");

    // An error in the second document names document 2; the first still parses fine.
    let text = format!("{}---\nkind: [\n", image_td("a", "img"));
    let errors = parse_err(&text, "two.yaml");
    assert_eq!(errors.len(), 1, "{}", show(&errors));
    assert_eq!(errors[0].document, Some(2));
    assert!(errors[0].line.unwrap() >= 9, "{}", errors[0]);
}

#[test]
fn broken_json() {
    let errors = parse_err("{\n  \"kind\": \"Service\",\n  oops\n}", "x.json");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, Some(3), "{}", errors[0]);
}

#[test]
fn unknown_kind_suggests_the_closest() {
    let text = "apiVersion: berth.dev/v1\nkind: Servce\nmetadata: {name: web}\nspec: {}\n";
    let errors = parse_err(text, "web.yaml");
    let e = find(&errors, "kind");
    assert_eq!(e.document, Some(1));
    assert!(e.message.contains("did you mean `Service`"), "{e}");
    assert!(
        e.message.contains("Cluster, TaskDefinition, Service"),
        "{e}"
    );
    assert_eq!(e.line, Some(2), "{e}");

    let errors = parse_err(&text.replace("Servce", "Gizmo"), "web.yaml");
    let e = find(&errors, "kind");
    assert!(!e.message.contains("did you mean"), "{e}");
    assert!(e.message.contains("expected one of"), "{e}");
}

#[test]
fn written_by_berth_kinds_cannot_be_applied() {
    for kind in ["Task", "ContainerInstance"] {
        let text =
            format!("apiVersion: berth.dev/v1\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{}}\n");
        let errors = parse_err(&text, "t.yaml");
        let e = find(&errors, "kind");
        assert!(e.message.contains("cannot be applied"), "{e}");
    }
}

#[test]
fn wrong_api_version() {
    let text = image_td("web", "img").replace("berth.dev/v1", "v1");
    let errors = parse_err(&text, "web.yaml");
    let e = find(&errors, "apiVersion");
    assert!(e.message.contains("berth.dev/v1"), "{e}");
    assert_eq!(e.line, Some(1));
    let text = image_td("web", "img").replace("apiVersion: berth.dev/v1\n", "");
    let errors = parse_err(&text, "web.yaml");
    assert!(find(&errors, "apiVersion").message.contains("missing"));
}

#[test]
fn unknown_field_with_suggestion() {
    let text = image_td("web", "img").replace("image:", "imag:");
    let errors = parse_err(&text, "manifests/web.yaml");
    let e = find(&errors, "spec.containerDefinitions[0].imag");
    assert!(e.message.contains("unknown field `imag`"), "{e}");
    assert!(e.message.contains("did you mean `image`?"), "{e}");
    assert_eq!(e.document, Some(1));
    assert_eq!(e.line, Some(7), "{e}");
    assert!(e.column.is_some());
}

#[test]
fn unknown_enum_value_with_suggestion() {
    let text = image_td("web", "img").replace("spec:\n", "spec:\n  networkMode: brigde\n");
    let errors = parse_err(&text, "web.yaml");
    let e = find(&errors, "spec.networkMode");
    assert!(e.message.contains("did you mean `bridge`"), "{e}");
}

#[test]
fn negative_desired_count() {
    let errors = parse_err(&service("web", "web", -1, &[]), "svc.yaml");
    let e = find(&errors, "spec.desiredCount");
    assert!(e.message.contains("must not be negative"), "{e}");
    assert_eq!(e.line, Some(6), "{e}");
    assert_eq!(e.document, Some(1));
}

#[test]
fn container_without_image() {
    // Missing field.
    let text = image_td("web", "img").replace("      image: \"img\"\n", "");
    let errors = parse_err(&text, "web.yaml");
    let e = find(&errors, "spec.containerDefinitions[0].image");
    assert!(e.message.contains("missing"), "{e}");
    assert!(e.line.is_some(), "{e}");
    // Empty string: a semantic error; load_path locates it in the text.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "web.yaml", &image_td("web", ""));
    let errors = load_path(dir.path()).unwrap_err();
    let e = find(&errors, "spec.containerDefinitions[0].image");
    assert!(e.message.contains("must not be empty"), "{e}");
    assert!(e.file.ends_with("web.yaml"), "{e}");
    assert_eq!(e.document, Some(1));
    assert_eq!(e.line, Some(7), "{e}");
    // And validate alone names it too (without a line: it has no text).
    let docs = parse_str(&image_td("web", " "), "web.yaml").unwrap();
    let errors = validate(&docs);
    find(&errors, "spec.containerDefinitions[0].image");
}

#[test]
fn port_mapped_twice() {
    let text = image_td("web", "img").replace(
        "      memory: 64\n",
        "      memory: 64\n      portMappings: [{containerPort: 80}, {containerPort: 80, hostPort: 8080}]\n",
    );
    let docs = parse_str(&text, "web.yaml").unwrap();
    let errors = validate(&docs);
    let e = find(
        &errors,
        "spec.containerDefinitions[0].portMappings[1].containerPort",
    );
    assert!(e.message.contains("mapped twice"), "{e}");

    // The same fixed host port in two containers.
    let text = r#"apiVersion: berth.dev/v1
kind: TaskDefinition
metadata: {name: two}
spec:
  memory: 128
  containerDefinitions:
    - {name: a, image: i, portMappings: [{containerPort: 80, hostPort: 8080}]}
    - {name: b, image: i, portMappings: [{containerPort: 81, hostPort: 8080}]}
"#;
    let errors = validate(&parse_str(text, "two.yaml").unwrap());
    let e = find(
        &errors,
        "spec.containerDefinitions[1].portMappings[0].hostPort",
    );
    assert!(e.message.contains("8080"), "{e}");

    // awsvpc: one namespace for the task, so one container port once.
    let text = text
        .replace("memory: 128", "memory: 128\n  networkMode: awsvpc")
        .replace("hostPort: 8080", "hostPort: 0")
        .replace("containerPort: 81", "containerPort: 80");
    let errors = validate(&parse_str(&text, "two.yaml").unwrap());
    find(
        &errors,
        "spec.containerDefinitions[1].portMappings[0].containerPort",
    );
}

#[test]
fn host_mode_host_port_must_equal_container_port() {
    let text = image_td("web", "img")
        .replace("spec:\n", "spec:\n  networkMode: host\n")
        .replace(
            "      memory: 64\n",
            "      memory: 64\n      portMappings: [{containerPort: 80, hostPort: 8080}]\n",
        );
    let errors = validate(&parse_str(&text, "web.yaml").unwrap());
    find(
        &errors,
        "spec.containerDefinitions[0].portMappings[0].hostPort",
    );
}

#[test]
fn depends_on_missing_container() {
    let text = image_td("web", "img").replace(
        "      memory: 64\n",
        "      memory: 64\n      dependsOn: [{containerName: sidecr, condition: START}]\n    - {name: sidecar, image: i, memory: 8}\n",
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "web.yaml", &text);
    let errors = load_path(dir.path()).unwrap_err();
    let e = find(
        &errors,
        "spec.containerDefinitions[0].dependsOn[0].containerName",
    );
    assert!(e.message.contains("sidecr"), "{e}");
    assert!(e.message.contains("did you mean `sidecar`"), "{e}");
    assert_eq!(e.line, Some(9), "{e}");
}

#[test]
fn dependency_cycle_and_conditions() {
    let text = r#"apiVersion: berth.dev/v1
kind: TaskDefinition
metadata: {name: cyc}
spec:
  memory: 128
  containerDefinitions:
    - {name: a, image: i, dependsOn: [{containerName: b, condition: START}]}
    - {name: b, image: i, dependsOn: [{containerName: a, condition: HEALTHY}]}
"#;
    let errors = validate(&parse_str(text, "c.yaml").unwrap());
    let all = show(&errors);
    assert!(all.contains("dependency cycle: a -> b -> a"), "{all}");
    assert!(
        all.contains("HEALTHY needs container `a` to have a healthCheck"),
        "{all}"
    );
}

#[test]
fn other_semantic_checks() {
    let text = r#"apiVersion: berth.dev/v1
kind: TaskDefinition
metadata: {name: "bad name"}
spec:
  containerDefinitions:
    - name: a
      image: i
      essential: false
      memory: 4
      memoryReservation: 8
      healthCheck: {command: ["curl", "-f", "localhost"]}
    - {name: a, image: i, essential: false, memory: 64}
---
apiVersion: berth.dev/v1
kind: Service
metadata: {name: s}
spec:
  taskDefinition: "fam:x"
  desiredCount: 1
  deploymentConfiguration: {minimumHealthyPercent: 100, maximumPercent: 150}
  placementStrategy: [{type: binpack, field: disk}, {type: spread}]
  placementConstraints: [{type: memberOf}]
"#;
    let errors = validate(&parse_str(text, "bad.yaml").unwrap());
    let all = show(&errors);
    for field in [
        "metadata.name",
        "spec.containerDefinitions",
        "spec.containerDefinitions[0].memory",
        "spec.containerDefinitions[0].memoryReservation",
        "spec.containerDefinitions[0].healthCheck.command",
        "spec.containerDefinitions[1].name",
        "spec.taskDefinition",
        "spec.deploymentConfiguration.maximumPercent",
        "spec.placementStrategy[0].field",
        "spec.placementStrategy[1].field",
        "spec.placementConstraints[0].expression",
    ] {
        assert!(
            errors.iter().any(|e| e.field.as_deref() == Some(field)),
            "no error for {field}:\n{all}"
        );
    }
    // Every error names file and document.
    assert!(errors
        .iter()
        .all(|e| e.file == "bad.yaml" && e.document.is_some()));
    assert!(errors
        .iter()
        .filter(|e| e.field.as_deref() == Some("spec.taskDefinition"))
        .all(|e| e.document == Some(2)));
}

#[test]
fn non_manifest_yaml() {
    let errors = parse_err("- a\n- b\n", "list.yaml");
    assert_eq!(errors[0].document, Some(1));
    assert!(
        errors[0].message.contains("not a berth manifest"),
        "{}",
        errors[0]
    );
    let errors = parse_err("name: x\nimage: y\n", "compose.yaml");
    let e = find(&errors, "kind");
    assert!(e.message.contains("missing field `kind`"), "{e}");
    let errors = parse_err("just a string\n", "s.yaml");
    assert!(errors[0].message.contains("not a berth manifest"));
}

#[test]
fn duplicate_key_and_tags_are_refused() {
    let text = image_td("web", "img")
        .replace("      memory: 64\n", "      memory: 64\n      memory: 65\n");
    let errors = parse_err(&text, "d.yaml");
    assert!(show(&errors).contains("duplicate"), "{}", show(&errors));
    let text = image_td("web", "img").replace("\"img\"", "!Ref img");
    let errors = parse_err(&text, "t.yaml");
    assert!(show(&errors).contains("tags"), "{}", show(&errors));
}

#[test]
fn every_error_of_every_document_is_reported() {
    let text = format!(
        "{}---\n{}---\n{}",
        image_td("a", "x").replace("image:", "imag:"),
        service("s", "a", -3, &[]),
        "apiVersion: berth.dev/v1\nkind: Nope\n"
    );
    let errors = parse_err(&text, "many.yaml");
    let docs: Vec<_> = errors.iter().map(|e| e.document).collect();
    assert_eq!(docs, vec![Some(1), Some(2), Some(3)], "{}", show(&errors));
}

#[test]
fn alias_bomb_fails_fast() {
    let bomb = r#"apiVersion: berth.dev/v1
kind: TaskDefinition
metadata: {name: lol}
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
spec: *i
"#;
    let t = Instant::now();
    let errors = parse_err(bomb, "bomb.yaml");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(errors[0].document, Some(1));

    // A "wide" bomb: one big anchor aliased many times (under serde_yaml's repetition limit).
    let mut wide =
        String::from("apiVersion: berth.dev/v1\nkind: Cluster\nmetadata: {name: w}\nbig: &x [");
    wide.push_str(&"1,".repeat(20_000));
    wide.push_str("1]\nmany: [");
    wide.push_str(&"*x,".repeat(20_000));
    wide.push_str("*x]\n");
    let t = Instant::now();
    let errors = parse_err(&wide, "wide.yaml");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(show(&errors).contains("alias"), "{}", show(&errors));
}

#[test]
fn deep_nesting_is_refused() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(parse_str(&deep, "deep.yaml").is_err());
    assert!(parse_str(&deep, "deep.json").is_err());
}

#[test]
fn oversized_file() {
    let big = format!(
        "apiVersion: berth.dev/v1\nkind: Cluster\nmetadata: {{name: big}}\n# {}\n",
        "x".repeat(MAX_FILE_BYTES)
    );
    let errors = parse_err(&big, "big.yaml");
    assert!(errors[0].message.contains("too large"), "{}", errors[0]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "big.yaml", &big);
    write(dir.path(), "ok.yaml", &image_td("ok", "img"));
    let errors = load_path(dir.path()).unwrap_err();
    assert_eq!(errors.len(), 1, "{}", show(&errors));
    assert!(errors[0].file.ends_with("big.yaml"));
    assert!(errors[0].message.contains("too large"));
}

// ----- loading folders -------------------------------------------------------------------------

#[test]
fn folder_walk_sorted_recursive_ignoring_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "b.yaml", &image_td("b", "img"));
    write(d, "a.yml", &image_td("a", "img"));
    write(
        d,
        "sub/c.json",
        r#"{"apiVersion":"berth.dev/v1","kind":"Cluster","metadata":{"name":"c"}}"#,
    );
    write(d, "README.md", "# not yaml: [\n");
    write(d, "notes.txt", "kind: Nope");
    write(d, ".git/config.yaml", "kind: [broken");
    write(d, ".hidden.yaml", "kind: [broken");
    let docs = load_path(d).unwrap_or_else(|e| panic!("{}", show(&e)));
    let names: Vec<_> = docs.iter().map(|d| d.name().to_string()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(docs[2].source.file.ends_with("sub/c.json"));
    // A single file named directly.
    let docs = load_path(&d.join("b.yaml")).unwrap();
    assert_eq!(docs.len(), 1);
    // A missing path.
    let errors = load_path(&d.join("nope")).unwrap_err();
    assert!(errors[0].file.ends_with("nope"));
}

#[test]
fn errors_from_all_files_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "1.yaml", "kind: [\n");
    write(d, "2.yaml", &service("s", "x", -1, &[]));
    write(d, "3.yaml", &image_td("t", ""));
    let errors = load_path(d).unwrap_err();
    let files: Vec<_> = errors
        .iter()
        .map(|e| {
            Path::new(&e.file)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    assert_eq!(files, ["1.yaml", "2.yaml", "3.yaml"], "{}", show(&errors));
}

#[test]
fn duplicate_names_across_two_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &image_td("web", "one"));
    write(dir.path(), "b.yaml", &image_td("web", "two"));
    let errors = load_path(dir.path()).unwrap_err();
    assert_eq!(errors.len(), 1, "{}", show(&errors));
    let e = &errors[0];
    assert!(e.file.ends_with("b.yaml"), "{e}");
    assert!(e.message.contains("a.yaml"), "names both files: {e}");
    assert_eq!(e.field.as_deref(), Some("metadata.name"));
    assert_eq!(e.line, Some(3), "{e}");
    // Same name, different kinds: fine.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &image_td("web", "one"));
    write(dir.path(), "b.yaml", &service("web", "web", 1, &[]));
    load_path(dir.path()).unwrap();
}

#[cfg(unix)]
#[test]
fn symlink_loop() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "ok.yaml", &image_td("ok", "img"));
    symlink(d, d.join("again")).unwrap(); // a directory loop
    let errors = load_path(d).unwrap_err();
    assert_eq!(errors.len(), 1, "{}", show(&errors));
    assert!(errors[0].file.ends_with("again"), "{}", errors[0]);
    assert!(errors[0].message.contains("loop"), "{}", errors[0]);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    symlink(d.join("x.yaml"), d.join("y.yaml")).unwrap();
    symlink(d.join("y.yaml"), d.join("x.yaml")).unwrap(); // a file-level loop
    let errors = load_path(d).unwrap_err();
    assert_eq!(errors.len(), 2, "{}", show(&errors));
    assert!(
        errors.iter().all(|e| e.message.contains("loop")),
        "{}",
        show(&errors)
    );
}

#[cfg(unix)]
#[test]
fn symlink_escaping_the_directory() {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.yaml", &image_td("secret", "img"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "ok.yaml", &image_td("ok", "img"));
    symlink(outside.path().join("secret.yaml"), d.join("evil.yaml")).unwrap();
    symlink(outside.path(), d.join("evildir")).unwrap();
    let errors = load_path(d).unwrap_err();
    assert_eq!(errors.len(), 2, "{}", show(&errors));
    assert!(errors[0].file.ends_with("evil.yaml"));
    assert!(errors[1].file.ends_with("evildir"));
    assert!(
        errors.iter().all(|e| e.message.contains("outside")),
        "{}",
        show(&errors)
    );

    // A symlink inside the tree is followed.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "real/web.yaml", &image_td("web", "img"));
    symlink(d.join("real"), d.join("link")).unwrap();
    let errors = load_path(d).unwrap_err();
    // …and reading it twice is a duplicate: both files are named.
    assert!(errors[0].message.contains("duplicate"), "{}", show(&errors));
}

#[test]
fn a_vanished_file_is_a_clear_error() {
    // The loader reports what it cannot open; a broken symlink stands in for a file deleted
    // between listing and reading.
    #[cfg(unix)]
    {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone.yaml"), dir.path().join("web.yaml"))
            .unwrap();
        let errors = load_path(dir.path()).unwrap_err();
        assert!(errors[0].file.ends_with("web.yaml"));
        assert!(
            errors[0].message.contains("does not exist"),
            "{}",
            errors[0]
        );
    }
}

// ----- property tests ----------------------------------------------------------------------------

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn parse_never_panics(text in "\\PC{0,400}") {
            for file in ["x.yaml", "x.json", "x"] {
                if let Ok(docs) = parse_str(&text, file) {
                    let _ = validate(&docs);
                }
            }
        }

        #[test]
        fn parse_never_panics_on_manifest_like_text(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("apiVersion: berth.dev/v1".to_string()),
                    Just("kind: TaskDefinition".to_string()),
                    Just("kind: Service".to_string()),
                    Just("metadata: {name: web}".to_string()),
                    Just("spec:".to_string()),
                    Just("  containerDefinitions:".to_string()),
                    Just("    - name: a".to_string()),
                    Just("      image: x".to_string()),
                    Just("      memory: 64".to_string()),
                    Just("  taskDefinition: web".to_string()),
                    Just("  desiredCount: -1".to_string()),
                    Just("---".to_string()),
                    Just("a: &a [1, 2]".to_string()),
                    Just("b: *a".to_string()),
                    Just("- &b {x: *a}".to_string()),
                    Just("apiVersion: berth.dev/v1".to_string()),
                    Just("  - {containerPort: 80}".to_string()),
                    "[ -~]{0,20}",
                ],
                0..30,
            )
        ) {
            let text = lines.join("\n");
            match parse_str(&text, "p.yaml") {
                Ok(docs) => { let _ = validate(&docs); }
                Err(errors) => {
                    for e in errors {
                        // The panic guard around serde_yaml is never needed.
                        prop_assert!(!e.message.contains("internal error"), "{}", text);
                        prop_assert_eq!(&e.file, "p.yaml");
                        prop_assert!(!e.message.is_empty());
                    }
                }
            }
        }
    }
}
