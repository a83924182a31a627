#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use super::*;

fn load(sources: &[(&str, &str)]) -> Result<Set, LoadErrors> {
    Set::from_sources(sources, &cel::Env::new())
}

const GOOD: &str = r#"
policy: provisioning
applies_to: { actions: [provision], resource_types: [cloud.vm] }
default_reason: no rule matched
rules:
  - name: tiny
    when: resource.properties.monthly_cost <= 50.0
    effect: allow
    reason: small
  - name: budget
    when: "true"
    hook: cost-threshold
"#;

#[test]
fn a_good_policy_compiles() {
    let set = load(&[("p.yaml", GOOD)]).unwrap();
    let p = set.select("provision", "cloud.vm").unwrap();
    assert_eq!(&*p.name, "provisioning");
    assert_eq!(p.rules.len(), 2);
    assert_eq!(&*p.rules[0].decided_by, "rule:provisioning/tiny");
    assert_eq!(p.rules[0].line, 6);
    assert_eq!(p.rules[1].outcome, Outcome::Hook("cost-threshold".into()));
    assert!(set.select("provision", "cloud.db").is_none());
}

#[test]
fn every_error_is_reported_with_file_line_and_rule() {
    let src = r#"
policy: broken
applies_to: { actions: [a] }
color: blue
rules:
  - name: one
    when: "subject.id =="
    effect: allow
  - name: two
    when: "true"
    effect: maybe
  - name: three
    when: "true"
  - name: one
    when: "subjct.id == 'x'"
    effect: deny
"#;
    let errs = load(&[("broken.yaml", src)]).unwrap_err();
    let text: Vec<String> = errs.errors.iter().map(ToString::to_string).collect();
    let find = |needle: &str| text.iter().find(|t| t.contains(needle)).cloned().unwrap_or_else(|| panic!("{needle} not in {text:#?}"));
    assert!(find("unknown key `color`").starts_with("broken.yaml:4:"));
    assert!(find("rule `one`: invalid CEL").starts_with("broken.yaml:7:"));
    assert!(find("effect must be").starts_with("broken.yaml:11: rule `two`"));
    assert!(find("needs an outcome").contains("rule `three`"));
    assert!(find("unknown variable `subjct`").starts_with("broken.yaml:15:"));
    assert!(find("duplicate rule name").contains("rule `one`"));
}

#[test]
fn overlapping_policies_are_rejected() {
    let a = "policy: a\napplies_to: { actions: [read], resource_types: [doc] }\nrules: []\n";
    let b = "policy: b\napplies_to: { actions: [read, write], resource_types: [doc] }\nrules: []\n";
    let err = load(&[("a.yaml", a), ("b.yaml", b)]).unwrap_err().to_string();
    assert!(err.contains("overlaps policy `a`") && err.contains("action `read` with resource type `doc`"), "{err}");
}

#[test]
fn the_most_specific_policy_wins() {
    let exact = "policy: exact\napplies_to: { actions: [read], resource_types: [doc] }\n";
    let action = "policy: action\napplies_to: { actions: [read] }\n";
    let rtype = "policy: rtype\napplies_to: { resource_types: [doc] }\n";
    let all = "policy: all\n";
    let set = load(&[("1.yaml", exact), ("2.yaml", action), ("3.yaml", rtype), ("4.yaml", all)]).unwrap();
    assert_eq!(&*set.select("read", "doc").unwrap().name, "exact");
    assert_eq!(&*set.select("read", "img").unwrap().name, "action");
    assert_eq!(&*set.select("write", "doc").unwrap().name, "rtype");
    assert_eq!(&*set.select("write", "img").unwrap().name, "all");
}

#[test]
fn on_error_allow_is_refused() {
    let src = "policy: p\non_error: allow\n";
    let err = load(&[("p.yaml", src)]).unwrap_err().to_string();
    assert!(err.contains("an error never allows"), "{err}");
}

#[test]
fn yaml_syntax_errors_have_a_line() {
    let err = load(&[("p.yaml", "policy: p\nrules: [\n  - name: x\n")]).unwrap_err();
    assert!(err.errors[0].message.contains("invalid YAML"), "{err}");
}
