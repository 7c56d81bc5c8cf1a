//! Checks every profile `deploy/lint-charts.sh` rendered into `$CHART_RENDER_DIR`
//! (`helm template` output, one `<profile>.yaml` per values profile).

use std::path::PathBuf;

use cloudmart_chart_check::{Externals, Render};

/// Memory budget of the whole install (requests and limits, HPA at its maximum).
const MEMORY_BUDGET_BYTES: f64 = 4.0 * 1024.0 * 1024.0 * 1024.0;

fn render_dir() -> PathBuf {
    let Some(dir) = std::env::var_os("CHART_RENDER_DIR") else {
        panic!(
            "CHART_RENDER_DIR is not set: this test checks the manifests rendered by \
             `make lint-charts` (deploy/lint-charts.sh), which sets it — run that instead"
        );
    };
    PathBuf::from(dir)
}

#[test]
fn rendered_profiles_pass_every_check() {
    let dir = render_dir();
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
