//! `deploy/compose.yaml` and `deploy/compose.stack.yaml`, parsed (Debian's python3-yaml, the
//! same YAML 1.1 loader family compose uses) and checked: every service has a healthcheck,
//! only the filtering proxy holds the Docker socket, no secret is an environment value, and
//! every secret a service names is declared as a file.

use std::process::Command;

use serde_json::Value;

fn load(file: &str) -> Value {
    let path = format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR"));
    // Debian's python3, which python3-yaml (installed by scripts/test) belongs to.
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            &path,
        ])
        .output()
        .expect("python3 runs (scripts/test installs python3-yaml)");
    assert!(
        out.status.success(),
        "{file} does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Names that hold a secret when they end an environment variable's name.
const SECRET_WORDS: [&str; 5] = ["TOKEN", "PASSWORD", "SECRET", "URL", "KEY"];

fn check(file: &str, must_have: &[&str]) {
    let doc = load(file);
    let services = doc["services"].as_object().expect("services");
    for name in must_have {
        assert!(services.contains_key(*name), "{file}: no service {name}");
    }
    let declared: Vec<&str> = doc["secrets"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for (secret, def) in doc["secrets"].as_object().into_iter().flatten() {
        assert!(
            def["file"].is_string(),
            "{file}: secret {secret} is not a file"
        );
    }
    for (name, svc) in services {
        assert!(
            svc["healthcheck"]["test"].is_array(),
            "{file}: service {name} has no healthcheck"
        );
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let v = v.as_str().unwrap_or_default();
            if v.contains("docker.sock") {
                assert_eq!(
                    name, "docker-proxy",
                    "{file}: only the filtering proxy mounts the Docker socket, not {name}"
                );
                assert!(
                    v.ends_with(":ro"),
                    "{file}: the proxy's socket is read-only"
                );
            }
        }
        for (key, value) in svc["environment"].as_object().into_iter().flatten() {
            let secretish =
                SECRET_WORDS.iter().any(|w| key.ends_with(w)) && !key.ends_with("PUBLIC_URL");
            let value = value
                .as_str()
                .map(str::to_string)
                .unwrap_or(value.to_string());
            assert!(
                !secretish || value.starts_with("/run/secrets/"),
                "{file}: {name}.environment.{key} holds a secret's value; use {key}_FILE"
            );
            let secret_file = key
                .strip_suffix("_FILE")
                .is_some_and(|k| SECRET_WORDS.iter().any(|w| k.ends_with(w)));
            if secret_file {
                assert!(
                    value.starts_with("/run/secrets/"),
                    "{file}: {name}.environment.{key} = {value} is not a mounted secret"
                );
                let secret = value.trim_start_matches("/run/secrets/");
                let given: Vec<&str> = svc["secrets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                assert!(
                    given.contains(&secret) && declared.contains(&secret),
                    "{file}: {name} reads secret {secret} it is not given"
                );
            }
        }
    }
    let runbot = &services["runbot"];
    assert_eq!(
        runbot["read_only"], true,
        "{file}: runbot's root filesystem is read-only"
    );
    assert!(
        runbot["environment"]["RUNBOT__DOCKER__HOST"]
            .as_str()
            .is_some_and(|h| h.contains("docker-proxy")),
        "{file}: runbot reaches Docker through the proxy"
    );
}

#[test]
fn the_compose_file_has_the_whole_stack_checked() {
    check(
        "compose.yaml",
        &[
            "runbot",
            "postgres",
            "redis",
            "prometheus",
            "alertmanager",
            "docker-proxy",
        ],
    );
}

#[test]
fn the_stack_file_adds_runbot_to_the_runbooks_stack() {
    check(
        "compose.stack.yaml",
        &[
            "runbot",
            "backend",
            "worker",
            "beat",
            "nginx",
            "postgres",
            "redis",
            "docker-proxy",
        ],
    );
}
