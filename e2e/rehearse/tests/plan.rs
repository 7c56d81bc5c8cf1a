//! The manifest → container translation, on a fixture render and on the real chart.

use std::collections::BTreeMap;

use cloudmart_chart_check::Render;
use cloudmart_rehearse::docker::{RunContext, run_args};
use cloudmart_rehearse::plan::{Plan, PlanOptions, ProbeAction, Role, expand};

fn fixture() -> Render {
    Render::parse(include_str!("fixtures/wiring.yaml")).expect("the fixture parses")
}

fn opts() -> PlanOptions {
    PlanOptions { namespace: "shop".into(), replicas: BTreeMap::new() }
}

#[test]
fn expansion_follows_kubernetes_rules() {
    let env = vec![("A".to_owned(), "1".to_owned()), ("B".to_owned(), "two".to_owned())];
    assert_eq!(expand("$(A)-$(B)", &env), "1-two");
    assert_eq!(expand("$(MISSING)", &env), "$(MISSING)", "unknown references stay as written");
    assert_eq!(expand("$$(A)", &env), "$(A)", "$$ escapes");
    assert_eq!(expand("cost $5 $(A", &env), "cost $5 $(A", "a lone $ or an open reference is literal");
}

#[test]
fn env_is_resolved_in_kubernetes_order() {
    let plan = Plan::build(&fixture(), &opts()).expect("plan");
    let app: Vec<_> = plan.app("app").collect();
    assert_eq!(app.len(), 2, "replicas: 2 gives two pods");
    let pod = app[1];
    assert_eq!(pod.pod, "app-1");
    assert_eq!(pod.env_value("LOG_FORMAT"), Some("text"), "env overrides envFrom");
    assert_eq!(pod.env_value("GRPC_ADDR"), Some("0.0.0.0:50051"), "envFrom configMapRef");
    assert_eq!(pod.env_value("ADDR_COPY"), Some("0.0.0.0:50051"), "configMapKeyRef");
    assert_eq!(pod.env_value("DATABASE_URL"), Some("postgres://app:pw@db:5432/app"), "secretKeyRef, base64-decoded");
    assert_eq!(pod.env_value("POD_NAME"), Some("app-1"), "fieldRef metadata.name");
    assert_eq!(
        pod.env_value("OTEL_RESOURCE_ATTRIBUTES"),
        Some("k8s.pod.name=app-1,k8s.namespace.name=shop,kept=$(UNKNOWN),literal=$(POD_NAME)")
    );
    assert_eq!(pod.args.as_deref(), Some(&["--pod".to_owned(), "app-1".to_owned()][..]), "args are expanded too");
}

#[test]
fn security_limits_volumes_probes_and_aliases() {
    let plan = Plan::build(&fixture(), &opts()).expect("plan");
    let pod = plan.app("app").next().expect("app pod");
    assert_eq!((pod.run_as_user, pod.run_as_group), (Some(65532), Some(65532)));
    assert!(pod.run_as_non_root && pod.read_only_root && pod.no_new_privileges);
    assert_eq!(pod.cap_drop, vec!["ALL".to_owned()]);
    assert_eq!(pod.supplemental_groups, vec![65532], "fsGroup joins the groups");
    assert_eq!(pod.cpus, Some(0.5));
    assert_eq!(pod.memory_bytes, Some(256 * 1024 * 1024));
    assert_eq!(pod.empty_dirs.len(), 1);
    assert_eq!(pod.empty_dirs[0].size_bytes, Some(64 * 1024 * 1024));
    assert!(!pod.empty_dirs[0].memory, "no medium: on disk, as the kubelet keeps it");
    assert_eq!(
        pod.startup.as_ref().map(|p| (&p.action, p.period_secs, p.failure_threshold)),
        Some((&ProbeAction::Grpc { port: 50051, service: String::new() }, 2, 30))
    );
    assert_eq!(
        pod.readiness.as_ref().map(|p| &p.action),
        Some(&ProbeAction::Tcp { port: 9101 }),
        "named port resolved"
    );
    for alias in ["app", "app.shop", "app.shop.svc", "app.shop.svc.cluster.local"] {
        assert!(pod.aliases.iter().any(|a| a == alias), "missing alias {alias}: {:?}", pod.aliases);
    }

    let db = plan.app("db").next().expect("db pod");
    assert_eq!(db.pod, "db-0");
    assert!(db.aliases.iter().any(|a| a == "db-0.db-headless.shop.svc.cluster.local"), "{:?}", db.aliases);
    assert_eq!(db.files.len(), 1);
    assert_eq!(db.files[0].files[0].mode, 0o555, "defaultMode 365 = 0555");
    assert!(matches!(db.readiness.as_ref().map(|p| &p.action), Some(ProbeAction::Exec { .. })));
    assert_eq!(db.role, Role::Serving);
}

#[test]
fn docker_run_line_carries_the_hardening() {
    let plan = Plan::build(&fixture(), &opts()).expect("plan");
    let pod = plan.app("app").next().expect("app pod");
    let files = std::path::PathBuf::from("/tmp/rehearse-test");
    let args = run_args(pod, &RunContext { run_id: "cmrTEST", network: "net", files_dir: &files }).join(" ");
    for want in [
        "--user 65532:65532",
        "--read-only",
        "--security-opt no-new-privileges",
        "--cap-drop ALL",
        "--cpus 0.500",
        "--memory 268435456",
        "--mount type=volume,source=cmrTEST-app-0-emptydir-0,destination=/tmp,volume-nocopy=true",
        "--network-alias app.shop.svc.cluster.local",
        "--restart always",
        "--stop-timeout 20",
    ] {
        assert!(args.contains(want), "`{want}` missing from: {args}");
    }
    assert!(args.ends_with("example/app:dev --pod app-0"), "image then args: {args}");
    let create = cloudmart_rehearse::docker::memory_dir_create_args("cmrTEST", "v", Some(1024)).join(" ");
    assert!(create.contains("--opt type=tmpfs") && create.contains("--opt o=mode=1777,size=1024"), "{create}");
    let create = cloudmart_rehearse::docker::disk_dir_create_args(
        "cmrTEST",
        "v",
        std::path::Path::new("/w/cmrTEST/.emptydir/a-0"),
    )
    .join(" ");
    assert!(
        create.contains("--opt type=none --opt o=bind --opt device=/w/cmrTEST/.emptydir/a-0"),
        "a disk-backed emptyDir binds a directory of the run: {create}"
    );
}

#[test]
fn a_missing_secret_key_names_the_pod_and_the_key() {
    let text = include_str!("fixtures/wiring.yaml").replace("key: url}", "key: uri}");
    let err = Plan::build(&Render::parse(&text).expect("parses"), &opts()).expect_err("must fail");
    assert_eq!(err.pod, "app-0");
    assert_eq!(err.reason, "CreateContainerConfigError");
    assert!(err.to_string().contains("couldn't find key uri in Secret shop/app-db"), "{err}");
}

#[test]
fn a_missing_config_map_volume_fails_the_mount() {
    let text =
        include_str!("fixtures/wiring.yaml").replace("configMap: {name: init,", "configMap: {name: init-missing,");
    let err = Plan::build(&Render::parse(&text).expect("parses"), &opts()).expect_err("must fail");
    assert_eq!((err.pod.as_str(), err.reason), ("db-0", "FailedMount"), "{err}");
}

#[test]
fn a_service_remapping_ports_is_refused() {
    let text = include_str!("fixtures/wiring.yaml")
        .replace("{name: grpc, port: 50051, targetPort: grpc}", "{name: grpc, port: 80, targetPort: grpc}");
    let err = Plan::build(&Render::parse(&text).expect("parses"), &opts()).expect_err("must fail");
    assert!(err.to_string().contains("cannot remap ports"), "{err}");
}

#[test]
fn replicas_can_be_overridden() {
    let mut o = opts();
    o.replicas.insert("app".into(), 4);
    let plan = Plan::build(&fixture(), &o).expect("plan");
    assert_eq!(plan.app("app").map(|p| p.pod.as_str()).collect::<Vec<_>>(), ["app-0", "app-1", "app-2", "app-3"]);
}

/// helm (see [`cloudmart_chart_check::find_helm`]); None, with a note, if there is none.
fn helm() -> Option<String> {
    let found = cloudmart_chart_check::find_helm();
    if found.is_none() {
        eprintln!("SKIP: no helm (HELM, PATH or the cache of `make lint-charts`); these tests render the chart");
    }
    found
}

fn chart_options(helm: String, set: &[&str]) -> cloudmart_rehearse::rehearsal::Options {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    cloudmart_rehearse::rehearsal::Options {
        chart: root.join("charts/cloudmart"),
        values: vec![root.join("charts/cloudmart/ci/rehearse-values.yaml")],
        set: set.iter().map(|s| (*s).to_owned()).collect(),
        release: "cloudmart".into(),
        namespace: "cloudmart".into(),
        helm,
        docker: "docker".into(),
        timeout: std::time::Duration::from_secs(60),
        work_dir: std::env::temp_dir(),
        replicas: BTreeMap::new(),
    }
}

#[test]
fn the_rehearsal_profile_of_the_chart_plans_every_pod() {
    let Some(helm) = helm() else { return };
    let (_, plan) = cloudmart_rehearse::rehearsal::plan(&chart_options(helm, &[])).expect("the chart plans");
    let pods: Vec<&str> = plan.pods.iter().map(|p| p.pod.as_str()).collect();
    for want in [
        "cloudmart-order-0",
        "cloudmart-delivery-0",
        "cloudmart-timesale-0",
        "cloudmart-kafka-0",
        "cloudmart-postgresql-0",
        "cloudmart-jaeger-0",
        "cloudmart-kafka-topics-1",
        "cloudmart-smoke-test",
    ] {
        assert!(pods.contains(&want), "{want} missing from {pods:?}");
    }
    let order = plan.app("order").next().expect("order");
    let url = order.env_value("DATABASE_URL").expect("DATABASE_URL resolved from the Secret");
    assert!(
        url.starts_with("postgres://order:") && url.ends_with("@cloudmart-postgresql.cloudmart.svc:5432/order"),
        "{url}"
    );
    assert_eq!(
        order.env_value("DELIVERY_ENDPOINT"),
        Some("http://cloudmart-delivery:50052"),
        "from the ConfigMap via envFrom"
    );
    let kafka = plan.app("kafka").next().expect("kafka");
    assert!(
        kafka.aliases.iter().any(|a| a == "cloudmart-kafka"),
        "the services' broker name is an alias: {:?}",
        kafka.aliases
    );
    assert_eq!(plan.app("timesale").count(), 1, "the HPA's minReplicas");
    assert_eq!(
        plan.app("delivery").next().and_then(|p| p.env_value("FAULT_DELIVERY_FAIL_POSTAL_CODES")),
        Some("99999")
    );
}

#[test]
fn a_wrong_database_url_secret_key_in_the_chart_names_the_pod_and_the_key() {
    let Some(helm) = helm() else { return };
    let broken = [
        "order.extraEnv[0].name=DATABASE_URL",
        "order.extraEnv[0].valueFrom.secretKeyRef.name=cloudmart-order-db",
        "order.extraEnv[0].valueFrom.secretKeyRef.key=uri",
    ];
    let err = cloudmart_rehearse::rehearsal::plan(&chart_options(helm, &broken)).expect_err("must not plan");
    let msg = format!("{err:#}");
    assert!(msg.contains("pod cloudmart-order-0"), "{msg}");
    assert!(msg.contains("CreateContainerConfigError"), "{msg}");
    assert!(msg.contains("couldn't find key uri in Secret cloudmart/cloudmart-order-db"), "{msg}");
}

#[test]
fn persistence_turns_a_volume_claim_template_into_a_volume_that_outlives_the_container() {
    let Some(helm) = helm() else { return };
    let set = ["kafka.persistence.enabled=true", "postgresql.persistence.enabled=true"];
    let (_, plan) = cloudmart_rehearse::rehearsal::plan(&chart_options(helm, &set)).expect("the chart plans");
    for (app, path) in [("kafka", "/var/lib/kafka/data"), ("postgresql", "/var/lib/postgresql/data")] {
        let pod = plan.app(app).next().expect(app);
        assert_eq!(
            pod.claims,
            vec![cloudmart_rehearse::plan::Claim { claim: "data".into(), mount_path: path.into() }],
            "{app}"
        );
        assert!(pod.empty_dirs.iter().all(|t| t.mount_path != path), "{app}: the data is not an emptyDir any more");
        let files = std::path::PathBuf::from("/tmp/x");
        let ctx = RunContext { run_id: "cmrT", network: "cmrT", files_dir: &files };
        let line = run_args(pod, &ctx).join(" ");
        let mount = format!("type=volume,source=cmrT-data-{},destination={path}", pod.pod);
        assert!(line.contains(&mount), "{app}: {line}");
        assert!(!line.contains(&format!("{mount},volume-nocopy")), "a claim is copied up from the image: {line}");
    }
}
