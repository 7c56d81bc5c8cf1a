//! Following a Job of the plugin: has it ended, its pod, its log, its exit status, and
//! deleting it — in the background after a finished run, in the foreground (waiting until
//! its pod is gone) when the run was interrupted, so the work stops with the plugin.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, LogParams};
use kube::{Api, Client};
use tokio::time::Instant;

/// How long an interrupted run waits for its Job (and pod) to be gone.
pub const JOB_GONE_TIMEOUT: Duration = Duration::from_secs(60);

/// How a Job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    Succeeded,
    Failed(String),
}

/// The end of `job` if it has ended: its `Complete`/`Failed` condition (or the
/// `SuccessCriteriaMet`/`FailureTarget` that precede them), else its pod counts.
pub fn job_end(job: &Job) -> Option<JobEnd> {
    let status = job.status.as_ref()?;
    for condition in status.conditions.iter().flatten().filter(|c| c.status == "True") {
        match condition.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => return Some(JobEnd::Succeeded),
            "Failed" | "FailureTarget" => {
                let why = [condition.reason.as_deref(), condition.message.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ");
                return Some(JobEnd::Failed(if why.is_empty() { "condition Failed".to_owned() } else { why }));
            }
            _ => {}
        }
    }
    if status.succeeded.unwrap_or(0) > 0 {
        Some(JobEnd::Succeeded)
    } else if status.failed.unwrap_or(0) > 0 {
        Some(JobEnd::Failed("its pod failed".to_owned()))
    } else {
        None
    }
}

/// The exit status of `container` in `pod`, once it terminated.
pub fn exit_code(pod: &Pod, container: &str) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

/// The last `n` lines of `logs`.
pub fn tail(logs: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// A Job of the plugin in a namespace.
pub struct JobHandle {
    /// The Job's name.
    pub name: String,
    /// Its container's name.
    pub container: String,
    namespace: String,
    jobs: Api<Job>,
    pods: Api<Pod>,
}

impl JobHandle {
    /// Job `name` in `namespace`, whose pod runs `container`.
    pub fn new(client: Client, namespace: &str, name: &str, container: &str) -> Self {
        Self {
            name: name.to_owned(),
            container: container.to_owned(),
            namespace: namespace.to_owned(),
            jobs: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client, namespace),
        }
    }

    /// The Jobs API of the namespace.
    pub fn jobs(&self) -> &Api<Job> {
        &self.jobs
    }

    /// Reads the Job: its end, if it has ended.
    pub async fn end(&self) -> Result<Option<JobEnd>> {
        let job = self
            .jobs
            .get(&self.name)
            .await
            .with_context(|| format!("reading Job {} in namespace {}", self.name, self.namespace))?;
        Ok(job_end(&job))
    }

    /// The Job's (latest) pod.
    pub async fn pod(&self) -> Result<Pod> {
        let (job, ns) = (&self.name, &self.namespace);
        let pods = self
            .pods
            .list(&ListParams::default().labels(&format!("job-name={job}")))
            .await
            .with_context(|| format!("listing the pods of Job {job} in namespace {ns}"))?;
        pods.items
            .into_iter()
            .rfind(|p| p.metadata.name.is_some())
            .with_context(|| format!("Job {job} in namespace {ns} has no pod (label job-name={job})"))
    }

    /// The last `lines` lines of the log of the container in pod `pod`.
    pub async fn logs(&self, pod: &str, lines: i64) -> Result<String> {
        let params =
            LogParams { container: Some(self.container.clone()), tail_lines: Some(lines), ..LogParams::default() };
        self.pods.logs(pod, &params).await.with_context(|| {
            format!("reading the log of pod {pod} (Job {}) in namespace {}", self.name, self.namespace)
        })
    }

    /// Deletes the Job with its pod. After an interrupt: foreground propagation, then waits
    /// (up to [`JOB_GONE_TIMEOUT`]) until the Job — and so its pod — is gone; otherwise in the
    /// background.
    pub async fn delete<W: Write + ?Sized>(&self, interrupted: bool, out: &mut W) -> Result<()> {
        let (job, ns) = (&self.name, &self.namespace);
        let params = if interrupted { DeleteParams::foreground() } else { DeleteParams::background() };
        match self.jobs.delete(job, &params).await {
            Ok(_) => {}
            // Already gone (Kubernetes' TTL, someone else): nothing left to stop.
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("deleting Job {job} in namespace {ns}")),
        }
        if !interrupted {
            writeln!(out, "deleted Job {job}")?;
            return Ok(());
        }
        writeln!(out, "deleting Job {job}: waiting for its pod to stop")?;
        let deadline = Instant::now() + JOB_GONE_TIMEOUT;
        loop {
            match self.jobs.get_opt(job).await {
                Ok(None) => break,
                Ok(Some(_)) | Err(_) if Instant::now() >= deadline => {
                    writeln!(
                        out,
                        "warning: Job {job} is still being deleted after {}s; `kubectl get job {job} -n {ns}` shows it",
                        JOB_GONE_TIMEOUT.as_secs()
                    )?;
                    return Ok(());
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        writeln!(out, "deleted Job {job} and its pod")?;
        Ok(())
    }
}

/// Writes the last `n` lines of `logs` of `pod`, indented.
pub fn print_tail<W: Write + ?Sized>(pod: &str, logs: &str, n: usize, out: &mut W) -> std::io::Result<()> {
    let lines = tail(logs, n);
    writeln!(out, "last {} log lines of pod {pod}:", lines.len())?;
    for line in lines {
        writeln!(out, "  | {line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus};

    use super::*;

    fn job_with(status: JobStatus) -> Job {
        Job { status: Some(status), ..Job::default() }
    }

    fn condition(type_: &str, status: &str) -> JobCondition {
        JobCondition { type_: type_.to_owned(), status: status.to_owned(), ..JobCondition::default() }
    }

    #[test]
    fn job_end_reads_conditions_then_counts() {
        assert_eq!(job_end(&Job::default()), None);
        assert_eq!(job_end(&job_with(JobStatus { active: Some(1), ..JobStatus::default() })), None);
        let complete = JobStatus { conditions: Some(vec![condition("Complete", "True")]), ..JobStatus::default() };
        assert_eq!(job_end(&job_with(complete)), Some(JobEnd::Succeeded));
        let not_yet = JobStatus { conditions: Some(vec![condition("Complete", "False")]), ..JobStatus::default() };
        assert_eq!(job_end(&job_with(not_yet)), None);
        let failed = JobStatus {
            conditions: Some(vec![JobCondition {
                reason: Some("DeadlineExceeded".to_owned()),
                ..condition("Failed", "True")
            }]),
            ..JobStatus::default()
        };
        assert_eq!(job_end(&job_with(failed)), Some(JobEnd::Failed("DeadlineExceeded".to_owned())));
        assert_eq!(
            job_end(&job_with(JobStatus { succeeded: Some(1), ..JobStatus::default() })),
            Some(JobEnd::Succeeded)
        );
        assert!(matches!(
            job_end(&job_with(JobStatus { failed: Some(1), ..JobStatus::default() })),
            Some(JobEnd::Failed(_))
        ));
    }

    #[test]
    fn exit_code_of_the_named_terminated_container() {
        let status = |name: &str, code: Option<i32>| ContainerStatus {
            name: name.to_owned(),
            state: Some(ContainerState {
                terminated: code.map(|exit_code| ContainerStateTerminated { exit_code, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = |statuses| Pod {
            status: Some(PodStatus { container_statuses: Some(statuses), ..Default::default() }),
            ..Pod::default()
        };
        assert_eq!(exit_code(&pod(vec![status("audit", Some(1))]), "audit"), Some(1));
        assert_eq!(exit_code(&pod(vec![status("audit", None)]), "audit"), None, "still running");
        assert_eq!(exit_code(&pod(vec![status("other", Some(0))]), "audit"), None);
        assert_eq!(exit_code(&Pod::default(), "audit"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let logs: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let t = tail(&logs, 20);
        assert_eq!(t.len(), 20);
        assert_eq!((t[0], t[19]), ("line 11", "line 30"));
        assert_eq!(tail("a\nb", 20), vec!["a", "b"]);
    }
}
