//! The README's grpcurl walkthrough, executed: every command of the "One order through the
//! saga" and "A flash sale" sections runs with `grpcurl` (built from the Go module proxy by
//! `e2e/tools/grpcurl.sh`) against `cloudmart-dev` — server reflection only, no `.proto`
//! files — and each `# → …` line is checked against what grpcurl printed. The commands
//! are read from README.md, so the docs cannot drift from the system.
//!
//! Expectation syntax (after `# →`): `"key": value` pairs that must appear in grpcurl's
//! output (`…` = any value), an upper-case gRPC code first for a refusal
//! (`FAILED_PRECONDITION, "reason": "SOLD_OUT"`), and `a moment later` for a state the saga
//! reaches asynchronously (the command is repeated until it matches). Placeholders
//! `<key>`, `<customer key>` or `<that key>` take the value of `key` from an earlier
//! output (for `customer`: from the output that named that customer).

use std::{collections::HashMap, path::PathBuf, process::Command, time::Duration};

use cloudmart_platform::testkit::until;

use crate::harness::{Proc, free_port, wait_serving};

/// One command of a README code block and what its `# →` comment promises.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    command: String,
    expect: Option<String>,
}

/// The ```sh blocks of the section headed `heading`.
fn section_blocks(readme: &str, heading: &str) -> Vec<String> {
    let start = readme.find(heading).unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let rest = &readme[start + heading.len()..];
    let end = ["\n## ", "\n### "].iter().filter_map(|h| rest.find(h)).min().unwrap_or(rest.len());
    let mut blocks = Vec::new();
    let mut body = &rest[..end];
    while let Some(open) = body.find("```sh\n") {
        let after = &body[open + 6..];
        let close = after.find("```").expect("unclosed code block");
        blocks.push(after[..close].to_owned());
        body = &after[close + 3..];
    }
    blocks
}

/// Splits a shell block into commands, following quotes and `\` continuations across
/// lines; a `#` outside quotes starts a comment, and a `# → …` comment (on the command's
/// last line or the line after it) becomes that command's expectation.
fn parse_steps(block: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut cmd = String::new();
    let (mut single, mut double) = (false, false);
    for line in block.lines() {
        let mut comment = None;
        let mut code = String::new();
        let mut prev = ' ';
        for (i, c) in line.char_indices() {
            match c {
                '\'' if !double => single = !single,
                '"' if !single && prev != '\\' => double = !double,
                '#' if !single && !double && prev.is_whitespace() => {
                    comment = Some(line[i + 1..].trim().to_owned());
                    break;
                }
                _ => {}
            }
            code.push(c);
            prev = c;
        }
        let continued = single || double || code.trim_end().ends_with('\\');
        if !code.trim().is_empty() {
            cmd.push_str(&code);
            cmd.push('\n');
        }
        if !continued && !cmd.trim().is_empty() {
            steps.push(Step { command: std::mem::take(&mut cmd), expect: None });
        }
        if let Some(text) = comment
            && let Some(expect) = text.strip_prefix('→')
            && let Some(last) = steps.last_mut()
        {
            last.expect = Some(expect.trim().to_owned());
        }
    }
    assert!(cmd.trim().is_empty(), "unterminated command in README block: {cmd}");
    steps
}

/// `FAILED_PRECONDITION` -> grpcurl's `FailedPrecondition`.
fn grpcurl_code(code: &str) -> String {
    code.split('_').map(|w| w[..1].to_owned() + &w[1..].to_lowercase()).collect()
}

/// Checks grpcurl's output (stdout + stderr) against an expectation; Err says what is missing.
fn check(expect: &str, ok: bool, output: &str) -> Result<(), String> {
    let expect = expect.split(" a moment later").next().unwrap_or(expect);
    let first = expect.split(',').next().unwrap_or("").trim();
    if !first.is_empty() && first.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
        let want = format!("Code: {}", grpcurl_code(first));
        if ok || !output.contains(&want) {
            return Err(format!("expected a refusal with {want}"));
        }
    } else if !ok {
        return Err("the call failed".into());
    }
    // Every `"key": value` pair, value up to the next `,` or the end of the pairs.
    let mut rest = expect;
    while let Some(q) = rest.find('"') {
        let after = &rest[q + 1..];
        let Some(kq) = after.find('"') else { break };
        let key = &after[..kq];
        let Some(colon) = after[kq + 1..].strip_prefix(':') else {
            rest = &after[kq + 1..];
            continue;
        };
        let colon = colon.trim_start();
        let value = if let Some(v) = colon.strip_prefix('"') {
            let end = v.find('"').ok_or("unterminated value")?;
            format!("\"{}\"", &v[..end])
        } else {
            colon.split([',', ' ', ':']).next().unwrap_or("").to_owned()
        };
        if value == "…" {
            if !output.contains(&format!("\"{key}\":")) {
                return Err(format!("no \"{key}\" in the output"));
            }
        } else if !has_pair(output, key, &value) {
            return Err(format!("no \"{key}\": {value} in the output"));
        }
        rest = &colon[value.len().min(colon.len())..];
    }
    Ok(())
}

/// Whether grpcurl's JSON has `"key": value` with nothing more to the value (`2` is not `20`).
fn has_pair(output: &str, key: &str, value: &str) -> bool {
    let pair = format!("\"{key}\": {value}");
    output
        .match_indices(&pair)
        .any(|(i, _)| output[i + pair.len()..].chars().next().is_none_or(|c| !c.is_ascii_alphanumeric() && c != '.'))
}

/// Remembers string fields of outputs: `key` (the latest) and `customer key`.
fn remember(values: &mut HashMap<String, String>, output: &str) {
    fn walk(v: &serde_json::Value, values: &mut HashMap<String, String>) {
        if let Some(obj) = v.as_object() {
            let customer = obj.get("customerId").and_then(|c| c.as_str()).map(str::to_owned);
            for (k, x) in obj {
                if let Some(s) = x.as_str() {
                    values.insert(k.clone(), s.to_owned());
                    if let Some(c) = &customer {
                        values.insert(format!("{c} {k}"), s.to_owned());
                    }
                } else {
                    walk(x, values);
                }
            }
        }
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(output) {
        walk(&v, values);
    }
}

/// Replaces `<…>` placeholders with remembered values.
fn fill(command: &str, values: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = command;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else { break };
        let name = &rest[open + 1..open + close];
        let key = name.trim_start_matches("that ");
        let camel: String = key
            .split('_')
            .enumerate()
            .map(|(i, w)| if i == 0 { w.to_owned() } else { w[..1].to_uppercase() + &w[1..] })
            .collect();
        let value = values
            .get(key)
            .or_else(|| values.get(&camel))
            .unwrap_or_else(|| panic!("README placeholder <{name}>: no earlier output had it ({values:?})"));
        out.push_str(&rest[..open]);
        out.push_str(value);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn readme_steps_are_parsed_with_quotes_continuations_and_expectations() {
    let block = "A=1\ngrpcurl -d '{\"a\":\n  \"b # c\"}' \\\n  host x/Y   # → \"k\": \"v\"\ngrpcurl host z/W\n# → NOT_FOUND\n# plain comment\n";
    let steps = parse_steps(block);
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[0], Step { command: "A=1\n".into(), expect: None });
    assert!(steps[1].command.contains("\"b # c\"}'"), "{steps:?}");
    assert_eq!(steps[1].expect.as_deref(), Some("\"k\": \"v\""));
    assert_eq!(steps[2].expect.as_deref(), Some("NOT_FOUND"));
    assert!(
        check(
            "\"status\": \"X\", \"n\": 2, \"id\": …",
            true,
            "{\n  \"status\": \"X\",\n  \"n\": 2,\n  \"id\": \"u\"\n}"
        )
        .is_ok()
    );
    assert!(check("\"status\": \"Y\"", true, "{\"status\": \"X\"}").is_err());
    assert!(check("\"n\": 2", true, "{\"n\": 20}").is_err(), "2 is not 20");
    assert!(
        check(
            "FAILED_PRECONDITION, \"reason\": \"SOLD_OUT\"",
            false,
            "Code: FailedPrecondition\n\"reason\": \"SOLD_OUT\""
        )
        .is_ok()
    );
    assert!(check("FAILED_PRECONDITION", true, "{}").is_err(), "a success is not a refusal");
    let mut values = HashMap::new();
    remember(&mut values, r#"{"purchase": {"purchaseId": "p1", "customerId": "alice"}}"#);
    remember(&mut values, r#"{"purchase": {"purchaseId": "p2", "customerId": "bob"}}"#);
    assert_eq!(fill("<alice purchaseId> <purchase_id> <that purchaseId>", &values), "p1 p2 p2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_grpcurl_walkthrough_works_against_make_dev() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let tool = Command::new("bash").arg(root.join("e2e/tools/grpcurl.sh")).output().expect("run grpcurl.sh");
    if tool.status.code() == Some(3) {
        eprintln!("[e2e] SKIP the_readme_grpcurl_walkthrough…: {}", String::from_utf8_lossy(&tool.stderr).trim());
        return;
    }
    assert!(tool.status.success(), "e2e/tools/grpcurl.sh failed:\n{}", String::from_utf8_lossy(&tool.stderr));
    let grpcurl = PathBuf::from(String::from_utf8_lossy(&tool.stdout).trim());
    let path = format!("{}:{}", grpcurl.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());

    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut steps = Vec::new();
    for heading in ["### One order through the saga", "### A flash sale"] {
        for block in section_blocks(&readme, heading) {
            steps.extend(parse_steps(&block));
        }
    }
    let calls = steps.iter().filter(|s| s.command.trim_start().starts_with("grpcurl")).count();
    assert!(calls >= 10, "the README walkthrough has only {calls} grpcurl calls: parsing went wrong? {steps:#?}");

    // `make dev`, on ports of its own; the README's ports are rewritten to them.
    let data = std::env::temp_dir().join(format!("cloudmart-readme-{}", uuid::Uuid::new_v4().simple()));
    let addrs: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let mut dev = Proc::spawn(
        "cloudmart-dev",
        "readme",
        &HashMap::new(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--order-addr",
            &addrs[0],
            "--delivery-addr",
            &addrs[1],
            "--timesale-addr",
            &addrs[2],
            "--metrics-port-base",
            "0",
        ],
    );
    wait_serving(&addrs[0], "cloudmart.order.v1.OrderService", &mut dev).await;
    wait_serving(&addrs[1], "cloudmart.delivery.v1.DeliveryService", &mut dev).await;
    wait_serving(&addrs[2], "cloudmart.timesale.v1.TimeSaleService", &mut dev).await;

    let mut prelude = String::from("set -eu\n");
    let mut values = HashMap::new();
    for step in &steps {
        let mut command = fill(&step.command, &values);
        for (readme_port, addr) in ["127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50053"].iter().zip(&addrs) {
            command = command.replace(readme_port, addr);
        }
        if !command.trim_start().starts_with("grpcurl") {
            prelude.push_str(&command);
            continue;
        }
        let later = step.expect.as_deref().is_some_and(|e| e.contains("a moment later"));
        // A step the README says settles "a moment later" is polled for up to 60 s; any
        // other must hold at once (one try).
        let within = Duration::from_secs(if later { 60 } else { 0 });
        let stdout = until(&format!("README step `{}`", step.command.lines().last().unwrap_or("").trim()), within, || {
            let (prelude, command) = (&prelude, &command);
            let (path, expect, log) = (&path, &step.expect, &dev.log);
            async move {
                let out = Command::new("bash")
                    .arg("-c")
                    .arg(format!("{prelude}{command}"))
                    .env("PATH", path)
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                let text = stdout.clone() + &String::from_utf8_lossy(&out.stderr);
                let verdict = match expect {
                    Some(e) => check(e, out.status.success(), &text),
                    None if out.status.success() => Ok(()),
                    None => Err("the call failed".into()),
                };
                verdict.map(|()| stdout).map_err(|why| {
                    format!(
                        "the README command does not do what the README says ({why}).\ncommand:\n{command}\nexpected: {expect:?}\ngrpcurl printed:\n{text}\ncloudmart-dev log: {}",
                        log.display()
                    )
                })
            }
        })
        .await;
        eprintln!("[e2e] README ok: {}", step.command.lines().last().unwrap_or("").trim());
        remember(&mut values, &stdout);
    }
    assert_eq!(dev.terminate(Duration::from_secs(30)).code(), Some(0), "cloudmart-dev stops cleanly on SIGTERM");
    let _ = std::fs::remove_dir_all(&data);
}
