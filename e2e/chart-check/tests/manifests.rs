//! Checks every profile `deploy/lint-charts.sh` rendered into `$CHART_RENDER_DIR`
//! (`helm template` output, one `<profile>.yaml` per values profile); without it (a plain
//! `cargo test --workspace`), the profiles it can render itself, or a SKIP without helm.

use std::path::PathBuf;
use std::process::Command;

use cloudmart_chart_check::{Externals, Render};

/// Memory budget of the whole install (requests and limits, HPA at its maximum).
const MEMORY_BUDGET_BYTES: f64 = 4.0 * 1024.0 * 1024.0 * 1024.0;

/// The renders to check: `$CHART_RENDER_DIR` as `make lint-charts` wrote it (every
/// profile), else the profiles that need no outside Secrets, rendered here with helm;
/// `None` (with a note) when there is neither.
fn render_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CHART_RENDER_DIR") {
        return Some(PathBuf::from(dir));
    }
    let Some(helm) = cloudmart_chart_check::find_helm() else {
        eprintln!(
            "SKIP: no CHART_RENDER_DIR and no helm (HELM, PATH or the cache of `make lint-charts`): \
             `make lint-charts` renders every profile and runs this test on them"
        );
        return None;
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join(format!("cloudmart-chart-render-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("temp dir");
    for (profile, values) in [
        ("default", None),
        ("kind", Some("deploy/kind/values.yaml")),
        ("rehearse", Some("charts/cloudmart/ci/rehearse-values.yaml")),
    ] {
        let mut cmd = Command::new(&helm);
        cmd.args(["template", "cloudmart"]).arg(root.join("charts/cloudmart")).args(["--namespace", "cloudmart"]);
        if let Some(v) = values {
            cmd.arg("--values").arg(root.join(v));
        }
        let o = cmd.output().expect("helm runs");
        assert!(o.status.success(), "helm template ({profile}): {}", String::from_utf8_lossy(&o.stderr));
        std::fs::write(out.join(format!("{profile}.yaml")), &o.stdout).expect("write render");
    }
    eprintln!("rendered default, kind, rehearse with {helm} into {}", out.display());
    Some(out)
}

#[test]
fn rendered_profiles_pass_every_check() {
    let Some(dir) = render_dir() else { return };
    let externals = Externals::from_list(&std::env::var("CHART_EXTERNAL_SECRETS").unwrap_or_default());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read CHART_RENDER_DIR {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.yaml in {}", dir.display());

    let mut failures = Vec::new();
    for file in &files {
        let profile = file.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let render = Render::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let problems = render.check(&externals);
        let budget = render.budget();
        println!("profile {profile}: {:?}", render.kinds);
        print!("{budget}");
        let max = budget.totals(true);
        if max.mem_request > MEMORY_BUDGET_BYTES || max.mem_limit > MEMORY_BUDGET_BYTES {
            failures.push(format!(
                "{profile}: memory at HPA max {:.0}/{:.0} MiB (requests/limits) exceeds the 4 GiB budget",
                max.mem_request / 1048576.0,
                max.mem_limit / 1048576.0
            ));
        }
        if problems.is_empty() {
            println!("profile {profile}: ok");
        }
        failures.extend(problems.into_iter().map(|p| format!("{profile}: {p}")));
    }
    assert!(failures.is_empty(), "chart checks failed:\n  {}", failures.join("\n  "));
}
