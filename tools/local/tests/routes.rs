//! Each HTTP function's route table (`eventline_*::routes::ROUTES`, what it dispatches on)
//! against the routes template.yaml gives it and the operations openapi.yaml documents, and
//! the Lambda events in `events/` against the tables. All read offline: no emulator.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use eventline_aws::routes::{Routes, path_parameters, route_key};
use serde_json::Value;

fn checkout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The route keys of each function's HttpApi events in template.yaml (by the function's
/// binary), and of every operation in openapi.yaml, read with the venv's Python as
/// `deploy_template.py` reads the template.
const READ_ROUTES: &str = r#"
import json, sys
sys.path.insert(0, "tools/local")
import deploy_template, yaml
from samtranslator.yaml_helper import yaml_parse
with open("template.yaml", encoding="utf-8") as f:
    sam = yaml_parse(f.read())
template = {}
for logical_id, resource in deploy_template.functions_of(sam).items():
    binary = deploy_template.binary_of(logical_id, resource)
    for event in (resource.get("Properties", {}).get("Events") or {}).values():
        if event.get("Type") == "HttpApi":
            props = event["Properties"]
            template.setdefault(binary, []).append(f"{props['Method'].upper()} {props['Path']}")
with open("openapi.yaml", encoding="utf-8") as f:
    doc = yaml.safe_load(f)
methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
openapi = [f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item if m in methods]
print(json.dumps({"template": template, "openapi": openapi}))
"#;

#[derive(serde::Deserialize)]
struct Declared {
    template: BTreeMap<String, Vec<String>>,
    openapi: Vec<String>,
}

async fn declared() -> Declared {
    let output = tokio::process::Command::new(checkout().join(".venv/bin/python"))
        .args(["-c", READ_ROUTES])
        .current_dir(checkout())
        .output()
        .await
        .expect("run the venv's python (run `make test` so .venv is installed)");
    assert!(output.status.success(), "reading the routes: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("routes as JSON")
}

fn keys<R>(routes: &Routes<R>) -> BTreeSet<String> {
    let keys: BTreeSet<String> = routes.iter().map(|(key, _)| (*key).to_owned()).collect();
    assert_eq!(keys.len(), routes.len(), "a route key appears twice in a table");
    keys
}

/// Each HTTP function's table, by its binary's name.
fn tables() -> BTreeMap<&'static str, BTreeSet<String>> {
    BTreeMap::from([
        ("ingest", keys(eventline_ingest::routes::ROUTES)),
        ("query", keys(eventline_query::routes::ROUTES)),
        ("admin", keys(eventline_admin::routes::ROUTES)),
    ])
}

fn differences(left: &BTreeSet<String>, right: &BTreeSet<String>) -> String {
    format!(
        "only on the left: {:?}; only on the right: {:?}",
        left.difference(right).collect::<Vec<_>>(),
        right.difference(left).collect::<Vec<_>>()
    )
}

#[tokio::test]
async fn each_function_serves_exactly_its_template_routes_and_openapi_documents_them_all() {
    let declared = declared().await;
    let tables = tables();
    let with_routes: BTreeSet<&str> = declared.template.keys().map(String::as_str).collect();
    assert_eq!(
        with_routes,
        tables.keys().copied().collect(),
        "the functions with HttpApi events in template.yaml (left) and those with a route table (right)"
    );
    for (function, table) in &tables {
        let template: BTreeSet<String> = declared.template[*function].iter().cloned().collect();
        assert_eq!(
            *table,
            template,
            "{function}: its ROUTES (left) and its HttpApi events in template.yaml (right); {}",
            differences(table, &template)
        );
    }
    let served: BTreeSet<String> = tables.values().flatten().cloned().collect();
    let documented: BTreeSet<String> = declared.openapi.iter().cloned().collect();
    assert_eq!(declared.openapi.len(), documented.len(), "openapi.yaml documents an operation twice");
    assert_eq!(
        served,
        documented,
        "the functions' route tables (left) and openapi.yaml's operations (right); {}",
        differences(&served, &documented)
    );
}

#[test]
fn every_http_event_fixture_names_a_route_of_its_function_with_the_parameters_of_its_path() {
    let tables = tables();
    let mut checked = 0;
    for entry in std::fs::read_dir(checkout().join("events")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Named for the function they are for: `query-get-event.json`.
        let Some(table) = name.split('-').next().and_then(|function| tables.get(function)) else { continue };
        let text = std::fs::read_to_string(&path).unwrap();
        let event: Value = serde_json::from_str(&text).unwrap();
        let key = event["routeKey"].as_str().unwrap_or_else(|| panic!("{name} has no routeKey"));
        assert_eq!(event["requestContext"]["routeKey"], key, "{name}: the context's routeKey is the event's");
        assert!(table.contains(key), "{name}: {key} is not a route of its function ({table:?})");
        let (method, route_path) = key.split_once(' ').unwrap();
        assert_eq!(event["requestContext"]["http"]["method"], method, "{name}");
        let raw_path = event["rawPath"].as_str().unwrap_or_else(|| panic!("{name} has no rawPath"));
        assert_eq!(event["requestContext"]["http"]["path"], raw_path, "{name}");
        let expected = path_parameters(route_path, raw_path)
            .unwrap_or_else(|| panic!("{name}: rawPath {raw_path} does not match its route {route_path}"));
        // API Gateway leaves pathParameters out when the route has none.
        let sent: HashMap<String, String> = match event.get("pathParameters") {
            None | Some(Value::Null) => HashMap::new(),
            Some(parameters) => serde_json::from_value(parameters.clone()).unwrap(),
        };
        assert_eq!(sent, expected, "{name}: pathParameters");
        // And the handlers read the same key from the request lambda_http makes of it.
        let request = lambda_http::request::from_str(&text).unwrap();
        assert_eq!(route_key(&request), Some(key), "{name}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} HTTP fixtures in events/");
}
