//! The rules on a small, correct render and on variants of it that break one rule each.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::*;

/// A small, correct render (`tests/fixtures/good.yaml`): order, delivery, timesale (+HPA),
/// postgres, kafka, jaeger, with the NetworkPolicies the design needs.
fn good() -> String {
    include_str!("../tests/fixtures/good.yaml").to_owned()
}

fn problems(yaml: &str) -> Vec<String> {
    Render::parse(yaml).expect("parses").check(&Externals::default())
}

#[test]
fn a_correct_render_passes() {
    assert_eq!(problems(&good()), Vec::<String>::new());
}

#[test]
fn a_missing_probe_is_reported() {
    let yaml = good().replacen("          livenessProbe: {grpc: {port: 50053}}\n", "", 1);
    let p = problems(&yaml);
    assert!(p.iter().any(|m| m.contains("container timesale: no gRPC livenessProbe")), "{p:#?}");
}

#[test]
fn a_second_hpa_is_reported() {
    let yaml = format!(
        "{}\n---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: order}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: order}}\n  maxReplicas: 3\n",
        good()
    );
    let p = problems(&yaml);
    assert!(p.iter().any(|m| m.contains("expected exactly one HorizontalPodAutoscaler, found 2")), "{p:#?}");
    assert!(p.iter().any(|m| m.contains("targets Deployment order")), "{p:#?}");
}

#[test]
fn missing_requests_and_soft_security_are_reported() {
    let yaml = good().replacen("requests: {cpu: 100m, memory: 64Mi}", "requests: {memory: 64Mi}", 1).replacen(
        "readOnlyRootFilesystem: true, ",
        "",
        1,
    );
    let p = problems(&yaml);
    assert!(p.iter().any(|m| m.contains("no cpu request")), "{p:#?}");
    assert!(p.iter().any(|m| m.contains("readOnlyRootFilesystem is not true")), "{p:#?}");
}

#[test]
fn dangling_references_are_reported() {
    let yaml = good().replace("secretKeyRef: {name: db", "secretKeyRef: {name: nope").replacen(
        "KAFKA_BROKERS: \"kafka:9092\"",
        "KAFKA_BROKERS: \"kafka:9999\"",
        1,
    );
    let p = problems(&yaml);
    assert!(p.iter().any(|m| m.contains("names Secret nope which does not exist")), "{p:#?}");
    assert!(p.iter().any(|m| m.contains("Service kafka has no port 9999")), "{p:#?}");
    // ... unless declared external
    let ext = Externals::from_list("nope, other");
    let p = Render::parse(&yaml).unwrap().check_references(&ext);
    assert!(!p.iter().any(|m| m.contains("nope")), "{p:#?}");
}

#[test]
fn a_service_selecting_nothing_is_reported() {
    let yaml =
        good().replacen("selector: {app.kubernetes.io/name: jaeger}", "selector: {app.kubernetes.io/name: jager}", 1);
    let p = problems(&yaml);
    assert!(p.iter().any(|m| m.contains("Service jaeger: selector")), "{p:#?}");
}

#[test]
fn network_policy_gaps_are_reported() {
    // no default deny: everything is open
    let p = problems(&good().replacen(
        "spec: {podSelector: {}, policyTypes: [Ingress, Egress]}",
        "spec: {podSelector: {matchLabels: {x: y}}, policyTypes: [Ingress]}",
        1,
    ));
    assert!(p.iter().any(|m| m.contains("no default-deny")), "{p:#?}");
    // order may no longer call delivery
    let p = problems(&good().replacen(
        "\n    - to: [{podSelector: {matchLabels: {app.kubernetes.io/name: delivery}}}]\n      ports: [{port: 50052}]",
        "",
        1,
    ));
    assert!(p.iter().any(|m| m == "NetworkPolicies block order -> delivery port 50052"), "{p:#?}");
    // DNS gone
    let p = problems(&good().replacen(
        "ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]",
        "ports: [{port: 53, protocol: TCP}]",
        1,
    ));
    assert!(p.iter().any(|m| m.contains("block DNS")), "{p:#?}");
    // an allow-all rule
    let p = problems(&format!(
        "{}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: open}}\nspec: {{podSelector: {{}}, ingress: [{{}}]}}\n",
        good()
    ));
    assert!(p.iter().any(|m| m.contains("NetworkPolicy open: an ingress rule allows everything")), "{p:#?}");
    // a stranger pod reaching a service needs an open egress too
    let p = problems(&format!(
        "{}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: open}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress, Egress], ingress: [{{ports: [{{port: 50051}}]}}], egress: [{{ports: [{{port: 50051}}]}}]}}\n",
        good()
    ));
    assert!(p.iter().any(|m| m.contains("unlabelled pod can reach order port 50051")), "{p:#?}");
}

#[test]
fn selectors_and_quantities() {
    let labels: Labels = [("a".to_owned(), "1".to_owned())].into();
    let sel: LabelSelector = serde_json::from_str(r#"{"matchExpressions":[{"key":"a","operator":"In","values":["1","2"]},{"key":"b","operator":"DoesNotExist"}]}"#).unwrap();
    assert!(selector_matches(Some(&sel), &labels));
    let sel: LabelSelector = serde_json::from_str(r#"{"matchLabels":{"a":"2"}}"#).unwrap();
    assert!(!selector_matches(Some(&sel), &labels));
    assert_eq!(parse_quantity("128Mi"), Some(128.0 * 1024.0 * 1024.0));
    assert_eq!(parse_quantity("500m"), Some(0.5));
    assert_eq!(parse_quantity("1"), Some(1.0));
    assert_eq!(hosts("http://a-b:4317"), vec![("a-b".to_owned(), Some(4317))]);
    assert_eq!(hosts("k1:9092, k2.x:9093").len(), 2);
    assert_eq!(hosts("postgres://u:p@db:5432/x"), vec![("db".to_owned(), Some(5432))]);
}

#[test]
fn budget_counts_hpa_max() {
    let r = Render::parse(&good()).unwrap();
    let b = r.budget();
    let min = b.totals(false);
    let max = b.totals(true);
    // 6 containers x 64Mi at min; timesale x8 at max => 13 x 64Mi
    assert_eq!(min.mem_request, 6.0 * 64.0 * 1024.0 * 1024.0);
    assert_eq!(max.mem_request, 13.0 * 64.0 * 1024.0 * 1024.0);
}
