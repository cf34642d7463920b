//! The agent's task reconciler: makes Docker match each task assigned to this instance, and
//! reports what it observes back into the task's status.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bollard::query_parameters::{CreateContainerOptions, InspectContainerOptions};
use bollard::Docker;
use tokio::time::Duration;

use super::docker::{self as d, Observed};
use super::pull::{PullConfig, PullOutcome, Puller};
use crate::auth::secret_values::{self, ContainerSecrets, RegistryLogin, TaskSecrets};
use crate::model::{
    keys, now, stop_codes, ContainerDefinition, ContainerStatus, DependencyCondition,
    DesiredStatus, HealthStatus, Kind, NetworkMode, Task, TaskDefinition, TaskState,
};
use crate::objects;
use crate::runtime::{Action, Reconciler};
use crate::store::DynStore;

/// Labelled containers whose task record is gone are removed after this long.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(10);
/// A pull shorter than this leaves no trace in the task's status.
const PULL_QUIET: Duration = Duration::from_secs(1);

pub struct TaskRunner {
    pub store: DynStore,
    pub docker: Docker,
    pub instance: String,
    /// Image of awsvpc tasks' pause containers (needs `sleep`).
    pub pause_image: String,
    /// Where task tokens come from (the server key here, or the API server).
    pub secrets: super::secrets::Secrets,
    /// Pulls images before their containers are created.
    pub puller: Puller,
    /// Set while the agent has lost its lease for longer than the grace: nothing is started.
    fenced: AtomicBool,
    /// The task metadata endpoint (ids, env and DNAT routes for each container), if serving.
    metadata: Option<Arc<super::metadata::Metadata>>,
    /// Pidfds on essential containers' main processes: an exit is seen before Docker's `die`.
    exits: Option<super::exit_watch::ExitWatch>,
    /// Task id → the revision of this agent's latest write of it: the watch event of that
    /// write only shows what the reconcile that made it already acted on (see `is_own_write`).
    own_writes: crate::runtime::OwnWrites,
    /// Pinned task definitions (`family:N`) read so far: a revision's spec never changes.
    taskdefs: std::sync::Mutex<HashMap<String, TaskDefinition>>,
}

/// Why a task must stop, as ECS reports it.
struct StopCause {
    code: &'static str,
    reason: String,
}

impl TaskRunner {
    pub fn new(
        store: DynStore,
        docker: Docker,
        instance: &str,
        pause_image: &str,
        secrets: super::secrets::Secrets,
    ) -> Self {
        TaskRunner {
            store,
            docker: docker.clone(),
            instance: instance.to_string(),
            pause_image: pause_image.to_string(),
            secrets,
            puller: Puller::new(docker, PullConfig::default()),
            fenced: AtomicBool::new(false),
            metadata: None,
            exits: None,
            own_writes: Default::default(),
            taskdefs: Default::default(),
        }
    }

    /// Pull as `cfg` says (the default: ECS's `default` behaviour).
    pub fn with_metadata(mut self, m: Option<Arc<super::metadata::Metadata>>) -> Self {
        self.metadata = m;
        self
    }

    /// The definition a task names, read from the store once per pinned revision (a changed
    /// spec registers a new revision; the old one's spec stays as it was).
    async fn taskdef(&self, reference: &str) -> objects::Result<Option<TaskDefinition>> {
        let lock = || self.taskdefs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(td) = lock().get(reference) {
            return Ok(Some(td.clone()));
        }
        let td = objects::taskdef(&*self.store, reference).await?;
        let pinned = crate::model::parse_taskdef_ref(reference).is_some_and(|(_, r)| r.is_some());
        if let Some(td) = td.as_ref().filter(|_| pinned) {
            let mut m = lock();
            if m.len() >= 512 {
                m.clear();
            }
            m.insert(reference.to_string(), td.clone());
        }
        Ok(td)
    }

    /// [`objects::update_task_from`] (`known`: the copy this pass started from), remembering
    /// the revision when this call wrote.
    async fn write_task(
        &self,
        id: &str,
        known: Option<&Task>,
        mut f: impl FnMut(&mut Task) -> bool,
    ) -> objects::Result<Option<Task>> {
        let mut wrote = false;
        let r = objects::update_task_from(&*self.store, id, known, |t| {
            wrote = f(t);
            wrote
        })
        .await?;
        match &r {
            Some(t) if wrote && !t.is_stopped() => self.own_writes.record(id, t.metadata.revision),
            // Stopped (nothing more will be written) or gone: forget it.
            Some(t) if t.is_stopped() => self.own_writes.forget(id),
            None => self.own_writes.forget(id),
            _ => {}
        }
        Ok(r)
    }

    /// Whether a task change at `revision` is this agent's own latest write: reconciling it
    /// again would only re-read Docker (a list and an inspect per container) while Docker is
    /// busy starting the next containers. Any other change, and every Docker event, still
    /// enqueues the task.
    pub fn is_own_write(&self, task: &str, revision: i64) -> bool {
        self.own_writes.is_own(task, revision)
    }

    /// Route a running container's addresses (in awsvpc mode only the pause container has
    /// any) to the metadata endpoint. Known routes cost nothing, so every pass calls this:
    /// an agent restarted under running tasks routes them again.
    async fn route_metadata(&self, task_id: &str, o: &Observed) {
        let Some(m) = &self.metadata else { return };
        if !o.running() {
            return;
        }
        for ip in &o.addresses {
            m.allow(task_id, ip).await;
        }
    }

    /// Watch essential containers' processes with `w` (its exits go to [`TaskRunner::early_exit`]).
    pub fn with_exit_watch(mut self, w: super::exit_watch::ExitWatch) -> Self {
        self.exits = Some(w);
        self
    }

    /// An essential container's main process has exited (seen on its pidfd, before Docker's
    /// `die`): mark the task stopping with ECS's reason at once, so its service starts the
    /// replacement while Docker is still tearing the container down. The task's resources
    /// stay held until the STOPPED record, which (with the exit code) still waits for Docker.
    pub async fn early_exit(&self, ev: &super::exit_watch::Exited) -> anyhow::Result<bool> {
        if self.is_fenced() {
            // Self-fencing stops containers on purpose; the records decide later.
            return Ok(false);
        }
        let mut marked = false;
        objects::update_task(&*self.store, &ev.task, |t| {
            if t.is_stopped()
                || t.status.desired_status != DesiredStatus::Running
                || t.status.container_instance.as_deref() != Some(&self.instance)
            {
                return false;
            }
            let other = t
                .status
                .containers
                .iter()
                .find(|c| c.name == ev.name)
                .and_then(|c| c.docker_id.as_deref())
                .is_some_and(|id| id != ev.container);
            if other {
                return false;
            }
            t.status.desired_status = DesiredStatus::Stopped;
            if t.status.last_status < TaskState::Deactivating {
                t.status.last_status = TaskState::Deactivating;
                t.status.stopping_at = Some(now());
            }
            if t.status.stop_code.is_none() {
                t.status.stop_code = Some(stop_codes::ESSENTIAL_CONTAINER_EXITED.into());
                t.status.stopped_reason = Some(early_reason(&ev.name));
            }
            marked = true;
            true
        })
        .await?;
        if marked {
            tracing::info!(task = %ev.task, container = %ev.name, "essential container's process exited");
        }
        Ok(marked)
    }

    /// Watch the main process of each running essential container that has no restart policy
    /// (a restart in place must not stop the task).
    fn watch_exits(
        &self,
        task: &str,
        order: &[ContainerDefinition],
        observed: &BTreeMap<String, Observed>,
    ) {
        let Some(w) = &self.exits else { return };
        for c in order {
            if !c.is_essential() || c.restart_policy.as_ref().is_some_and(|p| p.enabled) {
                continue;
            }
            if let Some((o, pid)) = observed.get(&c.name).and_then(|o| o.pid.map(|p| (o, p))) {
                if o.running() && !o.id.is_empty() {
                    w.ensure(task, &c.name, &o.id, pid);
                }
            }
        }
    }

    pub fn with_pull(mut self, cfg: PullConfig) -> Self {
        self.puller = Puller::new(self.docker.clone(), cfg);
        self
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// Self-fencing: stop every container of this instance gracefully (SIGTERM, each
    /// container's stopTimeout, SIGKILL) and start nothing until [`TaskRunner::unfence`].
    /// Containers are stopped, not removed: the task records decide later what becomes of them.
    pub async fn fence(&self) {
        self.fenced.store(true, Ordering::SeqCst);
        let owned = match d::list_owned(&self.docker, &self.instance).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "self-fencing: cannot list this instance's containers");
                return;
            }
        };
        let stops = owned
            .iter()
            .filter(|c| c.state.as_ref().is_some_and(|s| s.to_string() == "running"))
            .filter_map(|c| c.id.clone())
            .map(|id| async move {
                if let Err(e) = d::stop_graceful(&self.docker, &id).await {
                    tracing::warn!(container = %id, error = %e, "self-fencing: stop failed");
                }
            });
        futures::future::join_all(stops).await;
    }

    pub fn unfence(&self) {
        self.fenced.store(false, Ordering::SeqCst);
    }

    async fn inspect(&self, id: &str) -> anyhow::Result<Option<Observed>> {
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => Ok(Some(d::observe(&i))),
            Err(e) if d::is_status(&e, 404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Containers of the task on this agent, by container name.
    async fn observed(&self, task_id: &str) -> anyhow::Result<BTreeMap<String, Observed>> {
        let mut out = BTreeMap::new();
        for c in d::list_task(&self.docker, &self.instance, task_id).await? {
            let Some(name) = c.labels.as_ref().and_then(|l| l.get(d::LABEL_CONTAINER)) else {
                continue;
            };
            let Some(id) = c.id.as_deref() else { continue };
            if let Some(o) = self.inspect(id).await? {
                out.insert(name.clone(), o);
            }
        }
        Ok(out)
    }

    async fn remove_all(&self, task_id: &str) -> anyhow::Result<()> {
        for c in d::list_task(&self.docker, &self.instance, task_id).await? {
            if let Some(id) = c.id.as_deref() {
                d::remove(&self.docker, id).await?;
            }
        }
        if let Some(m) = &self.metadata {
            m.forget(task_id).await;
        }
        Ok(())
    }

    async fn create_and_start(
        &self,
        task: &Task,
        td: &TaskDefinition,
        c: &ContainerDefinition,
        secret_env: &[(String, String)],
        adopt: bool,
    ) -> anyhow::Result<Observed> {
        let name = d::container_name(&task.metadata.name, &c.name);
        let mut extra =
            super::hook::before_start(&*self.store, &self.secrets, &self.instance, task, td)
                .await?;
        extra.extend(secret_env.iter().cloned());
        let mut meta_labels = HashMap::new();
        if let Some(m) = &self.metadata {
            let (l, env) = m.for_container(task, td).await;
            meta_labels = l;
            extra.extend(env);
        }
        let mut body = d::create_body(task, td, c, &self.instance, &extra);
        if let Some(l) = body.labels.as_mut() {
            l.extend(meta_labels);
        }
        let awsvpc = td.spec.network_mode() == NetworkMode::Awsvpc;
        if awsvpc {
            // Join the task's own network namespace, held by its pause container.
            let pause = d::container_name(&task.metadata.name, d::PAUSE);
            if let Some(h) = body.host_config.as_mut() {
                h.network_mode = Some(format!("container:{pause}"));
                h.port_bindings = None;
            }
            body.hostname = None;
            body.exposed_ports = None;
        }
        let id = match self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    platform: String::new(),
                }),
                body,
            )
            .await
        {
            Ok(r) => r.id,
            // Created by an earlier attempt (e.g. before a crash): adopt it, or, when this
            // pass did not look at Docker first, start over looking.
            Err(e) if d::is_status(&e, 409) && adopt => name.clone(),
            Err(e) if d::is_status(&e, 409) => return Err(AlreadyCreated.into()),
            Err(e) => return Err(e.into()),
        };
        match self
            .docker
            .start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            Ok(()) => {}
            Err(e) if d::is_status(&e, 304) => {}
            Err(e) => return Err(e.into()),
        }
        let o = self
            .inspect(&id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("container {name} vanished right after start"))?;
        self.route_metadata(&task.metadata.name, &o).await;
        Ok(o)
    }

    /// Pull `c.image` as this agent's behaviour says. A pull that takes more than a moment
    /// shows in the task's status: the container `PULLING`, its reason "pulling image X: n/m
    /// layers". The error is the registry's message.
    async fn pull_image(
        &self,
        task: &Task,
        c: &ContainerDefinition,
        login: Option<&RegistryLogin>,
    ) -> Result<(), String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let store = self.store.clone();
        let (id, name, instance) = (
            task.metadata.name.clone(),
            c.name.clone(),
            self.instance.clone(),
        );
        let writer = tokio::spawn(async move {
            let start = std::time::Instant::now();
            let mut latest: Option<String> = None;
            let mut last_write: Option<std::time::Instant> = None;
            loop {
                match tokio::time::timeout(Duration::from_millis(250), rx.recv()).await {
                    Ok(Some(m)) => latest = Some(m),
                    Ok(None) => break,
                    Err(_) => {}
                }
                if start.elapsed() < PULL_QUIET
                    || last_write.is_some_and(|t| t.elapsed() < Duration::from_secs(1))
                {
                    continue;
                }
                let Some(m) = latest.take() else { continue };
                last_write = Some(std::time::Instant::now());
                let r = objects::update_task(&*store, &id, |t| {
                    if t.is_stopped() || t.status.container_instance.as_deref() != Some(&instance) {
                        return false;
                    }
                    match t.status.containers.iter_mut().find(|cs| cs.name == name) {
                        Some(cs) if cs.docker_id.is_some() => return false,
                        Some(cs) => {
                            cs.last_status = "PULLING".into();
                            cs.reason = Some(m.clone());
                        }
                        None => t.status.containers.push(ContainerStatus {
                            name: name.clone(),
                            last_status: "PULLING".into(),
                            reason: Some(m.clone()),
                            ..Default::default()
                        }),
                    }
                    true
                })
                .await;
                if let Err(e) = r {
                    tracing::debug!(task = %id, error = %e, "pull progress not recorded");
                }
            }
        });
        let progress = move |m: String| {
            let _ = tx.send(m);
        };
        let r = self.puller.ensure(&c.image, login, &progress).await;
        drop(progress);
        let _ = writer.await;
        match r {
            Ok(PullOutcome::Pulled) => {
                tracing::info!(task = %task.metadata.name, image = %c.image, "pulled image");
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(task = %task.metadata.name, image = %c.image, error = %e, "image pull failed");
                Err(e)
            }
        }
    }

    /// Stop every container (reverse start order, SIGTERM → stopTimeout → SIGKILL), record
    /// exit codes, remove the containers and mark the task STOPPED.
    async fn stop_task(
        &self,
        task: &Task,
        td: Option<&TaskDefinition>,
        cause: Option<StopCause>,
    ) -> anyhow::Result<Action> {
        let id = task.metadata.name.clone();
        if task.status.last_status < TaskState::Deactivating || cause.is_some() {
            let cause_ref = cause.as_ref();
            self.write_task(&id, Some(task), |t| {
                if t.is_stopped() {
                    return false;
                }
                t.status.desired_status = DesiredStatus::Stopped;
                if t.status.last_status < TaskState::Deactivating {
                    t.status.last_status = TaskState::Deactivating;
                    t.status.stopping_at = Some(now());
                }
                if let Some(c) = cause_ref {
                    if t.status.stop_code.is_none() {
                        t.status.stop_code = Some(c.code.to_string());
                        t.status.stopped_reason = Some(c.reason.clone());
                    }
                }
                true
            })
            .await?;
        }
        let order: Vec<ContainerDefinition> = td
            .map(|td| start_order(&td.spec.container_definitions))
            .unwrap_or_default();
        let observed = self.observed(&id).await?;
        // Reverse dependency order; containers not in the definition go last.
        let mut names: Vec<String> = order.iter().rev().map(|c| c.name.clone()).collect();
        for n in observed.keys() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let mut finals: BTreeMap<String, Observed> = BTreeMap::new();
        for n in &names {
            let Some(o) = observed.get(n) else { continue };
            if o.running() || o.state == "created" {
                let timeout = order
                    .iter()
                    .find(|c| &c.name == n)
                    .map(|c| c.stop_timeout_secs())
                    .unwrap_or(30);
                d::stop(&self.docker, &o.id, timeout).await?;
            }
            if let Some(o2) = self.inspect(&o.id).await? {
                finals.insert(n.clone(), o2);
            }
        }
        self.write_task(&id, None, |t| {
            if t.is_stopped() {
                return false;
            }
            // The early mark named the container; Docker now knows how it ended.
            let early = t.status.stopped_reason.as_deref().and_then(early_container);
            if let Some(o) = early.and_then(|n| finals.get(n).map(|o| (n, o))) {
                t.status.stopped_reason = Some(exited_reason(o.0, o.1));
            }
            for cs in t.status.containers.iter_mut() {
                if let Some(o) = finals.get(&cs.name) {
                    cs.exit_code = o.exit_code.or(cs.exit_code);
                }
                cs.last_status = "STOPPED".into();
                cs.network_bindings.clear();
            }
            for (n, o) in &finals {
                if !t.status.containers.iter().any(|c| &c.name == n) {
                    t.status.containers.push(ContainerStatus {
                        name: n.clone(),
                        docker_id: Some(o.id.clone()),
                        last_status: "STOPPED".into(),
                        exit_code: o.exit_code,
                        ..Default::default()
                    });
                }
            }
            t.status.desired_status = DesiredStatus::Stopped;
            t.status.last_status = TaskState::Stopped;
            t.status.stopped_at = Some(now());
            if t.status.stop_code.is_none() {
                t.status.stop_code = Some(stop_codes::USER_INITIATED.into());
                t.status.stopped_reason = Some("Task stopped".into());
            }
            true
        })
        .await?;
        // Removal after the STOPPED write: the replacement need not wait for it, and a
        // crash in between is cleaned up by the next reconcile of the stopped task.
        for o in finals.values() {
            d::remove(&self.docker, &o.id).await?;
        }
        Ok(Action::Done)
    }

    async fn run_task(&self, task: &Task) -> anyhow::Result<Action> {
        match self.run_task_with(task, true).await {
            Err(e) if e.is::<AlreadyCreated>() => self.run_task_with(task, false).await,
            r => r,
        }
    }

    /// One pass of a task that should run. `optimistic`: a task nothing was recorded for yet
    /// skips listing its containers (nothing to find but what a crashed attempt left, which
    /// the create then runs into: [`AlreadyCreated`] and the pass is redone looking first).
    async fn run_task_with(&self, task: &Task, optimistic: bool) -> anyhow::Result<Action> {
        let id = task.metadata.name.clone();
        let td = self.taskdef(&task.spec.task_definition).await?;
        let Some(td) = td else {
            return self
                .stop_task(
                    task,
                    None,
                    Some(StopCause {
                        code: stop_codes::TASK_FAILED_TO_START,
                        reason: format!("task definition {} not found", task.spec.task_definition),
                    }),
                )
                .await;
        };
        let order = start_order(&td.spec.container_definitions);
        let fresh = optimistic
            && td.spec.network_mode() != NetworkMode::Awsvpc
            && task.status.last_status < TaskState::Running
            && task.status.containers.iter().all(|c| c.docker_id.is_none());
        let mut observed = if fresh {
            BTreeMap::new()
        } else {
            self.observed(&id).await?
        };
        let mut task_ip = None;
        if td.spec.network_mode() == NetworkMode::Awsvpc {
            match observed.get(d::PAUSE) {
                // The namespace owner died: every member lost its network; restart the task.
                Some(p) if p.exited() => {
                    return self
                        .stop_task(
                            task,
                            Some(&td),
                            Some(StopCause {
                                code: stop_codes::ESSENTIAL_CONTAINER_EXITED,
                                reason: "Essential container in task exited: the task's network (pause) container exited".into(),
                            }),
                        )
                        .await;
                }
                Some(p) => task_ip = p.ip.clone(),
                None => match d::start_pause(&self.docker, task, &self.instance, &self.pause_image)
                    .await
                {
                    Ok(p) => {
                        task_ip = p.ip.clone();
                        observed.insert(d::PAUSE.to_string(), p);
                    }
                    Err(e) => {
                        return self
                            .stop_task(
                                task,
                                Some(&td),
                                Some(StopCause {
                                    code: stop_codes::TASK_FAILED_TO_START,
                                    reason: format!(
                                        "cannot set up the task network (awsvpc): {e:#}"
                                    ),
                                }),
                            )
                            .await;
                    }
                },
            }
        }
        // Routes first: an awsvpc task's containers reach the endpoint from their first moment.
        for o in observed.values() {
            self.route_metadata(&id, o).await;
        }
        let mut waiting = false;
        let mut task_secrets: Option<TaskSecrets> = None;
        let known: HashMap<&str, &ContainerStatus> = task
            .status
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        for c in &order {
            if observed.contains_key(&c.name) {
                continue;
            }
            // It ran before and its container is gone (removed by hand): it has exited.
            if known
                .get(c.name.as_str())
                .is_some_and(|k| k.docker_id.is_some())
            {
                observed.insert(
                    c.name.clone(),
                    Observed {
                        state: "exited".into(),
                        error: Some("container was removed".into()),
                        ..Default::default()
                    },
                );
                continue;
            }
            match dependencies_met(c, &observed) {
                Deps::Met => {}
                Deps::Wait => {
                    waiting = true;
                    continue;
                }
                Deps::Never(why) => {
                    return self
                        .stop_task(
                            task,
                            Some(&td),
                            Some(StopCause {
                                code: stop_codes::TASK_FAILED_TO_START,
                                reason: format!("container {}: {why}", c.name),
                            }),
                        )
                        .await;
                }
            }
            // Secrets (once per pass) and the image, before the container is created.
            if task_secrets.is_none() && secret_values::needs_secrets(&td) {
                match self.secrets.task_secrets(&*self.store, &id, &td).await {
                    Ok(s) => task_secrets = Some(s),
                    Err(e) => {
                        return self
                            .stop_task(
                                task,
                                Some(&td),
                                Some(StopCause {
                                    code: stop_codes::TASK_FAILED_TO_START,
                                    reason: format!(
                                        "ResourceInitializationError: unable to pull secrets or registry auth: {e}"
                                    ),
                                }),
                            )
                            .await;
                    }
                }
            }
            let none = ContainerSecrets::default();
            let cs = task_secrets
                .as_ref()
                .and_then(|s| s.get(&c.name))
                .unwrap_or(&none);
            if let Err(e) = self.pull_image(task, c, cs.registry.as_ref()).await {
                return self
                    .stop_task(
                        task,
                        Some(&td),
                        Some(StopCause {
                            code: stop_codes::TASK_FAILED_TO_START,
                            reason: format!("CannotPullContainerError: {e} (image {})", c.image),
                        }),
                    )
                    .await;
            }
            match self.create_and_start(task, &td, c, &cs.env, !fresh).await {
                Ok(o) => {
                    observed.insert(c.name.clone(), o);
                }
                Err(e) if e.is::<AlreadyCreated>() => return Err(e),
                Err(e) => {
                    let msg = format!("{e}");
                    let reason = if msg.contains("No such image") {
                        format!(
                            "CannotPullContainerError: image {} not found locally: {msg}",
                            c.image
                        )
                    } else {
                        format!("CannotStartContainerError: {msg}")
                    };
                    return self
                        .stop_task(
                            task,
                            Some(&td),
                            Some(StopCause {
                                code: stop_codes::TASK_FAILED_TO_START,
                                reason,
                            }),
                        )
                        .await;
                }
            }
        }
        // Restart policy: restart in place instead of failing the task, when allowed.
        let mut restarts: HashMap<&str, u32> = task
            .status
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.restart_count))
            .collect();
        for c in &order {
            let Some(o) = observed.get(&c.name) else {
                continue;
            };
            if !o.exited() || o.id.is_empty() || !restart_allowed(c, o) {
                continue;
            }
            match self
                .docker
                .start_container(
                    &o.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
            {
                Ok(()) => {
                    *restarts.entry(c.name.as_str()).or_insert(0) += 1;
                    tracing::info!(task = %id, container = %c.name, exit = ?o.exit_code, "restarted in place (restartPolicy)");
                    if let Some(o2) = self.inspect(&o.id).await? {
                        observed.insert(c.name.clone(), o2);
                    }
                }
                Err(e) => {
                    tracing::warn!(task = %id, container = %c.name, error = %e, "restart in place failed")
                }
            }
        }
        self.watch_exits(&id, &order, &observed);
        // Essential semantics: one essential container exiting stops the task.
        for c in &order {
            if let Some(o) = observed.get(&c.name) {
                if c.is_essential() && o.exited() {
                    return self
                        .stop_task(
                            task,
                            Some(&td),
                            Some(StopCause {
                                code: stop_codes::ESSENTIAL_CONTAINER_EXITED,
                                reason: exited_reason(&c.name, o),
                            }),
                        )
                        .await;
                }
            }
        }
        let all_essential_running = order
            .iter()
            .filter(|c| c.is_essential())
            .all(|c| observed.get(&c.name).is_some_and(|o| o.running()));
        let health = task_health(&order, &observed);
        let containers: Vec<ContainerStatus> = order
            .iter()
            .map(|c| {
                let o = observed.get(&c.name);
                ContainerStatus {
                    name: c.name.clone(),
                    docker_id: o.map(|o| o.id.clone()).filter(|s| !s.is_empty()),
                    last_status: match o {
                        Some(o) if o.running() => "RUNNING".into(),
                        Some(o) if o.exited() => "STOPPED".into(),
                        _ => "PENDING".into(),
                    },
                    exit_code: o.and_then(|o| o.exit_code),
                    reason: o.and_then(|o| o.error.clone()),
                    health_status: if c.health_check.is_some() {
                        o.map(|o| o.health).unwrap_or_default()
                    } else {
                        HealthStatus::Unknown
                    },
                    network_bindings: o.map(|o| o.bindings.clone()).unwrap_or_default(),
                    restart_count: restarts.get(c.name.as_str()).copied().unwrap_or(0),
                }
            })
            .collect();
        let target = if all_essential_running && !waiting {
            TaskState::Running
        } else {
            TaskState::Activating
        };
        self.write_task(&id, Some(task), |t| {
            if t.is_stopped() || t.status.container_instance.as_deref() != Some(&self.instance) {
                return false;
            }
            let mut changed = false;
            if t.status.last_status < target {
                t.status.last_status = target;
                changed = true;
                if target == TaskState::Running && t.status.started_at.is_none() {
                    t.status.started_at = Some(now());
                }
            }
            if t.status.health_status != health {
                t.status.health_status = health;
                changed = true;
            }
            if t.status.containers != containers {
                t.status.containers = containers.clone();
                changed = true;
            }
            if task_ip.is_some() && t.status.task_ip != task_ip {
                t.status.task_ip = task_ip.clone();
                changed = true;
            }
            changed
        })
        .await?;
        if waiting || target != TaskState::Running {
            return Ok(Action::RequeueAfter(Duration::from_millis(500)));
        }
        Ok(Action::Done)
    }
}

/// A create ran into a container of the same name that the pass did not know of.
#[derive(Debug, thiserror::Error)]
#[error("a container of this task already exists")]
struct AlreadyCreated;

const EXITED: &str = "Essential container in task exited: ";

/// The reason of a task whose essential container `name` ended as `o` says.
fn exited_reason(name: &str, o: &Observed) -> String {
    let code = o
        .exit_code
        .map(|e| format!("exit code {e}"))
        .unwrap_or_else(|| o.error.clone().unwrap_or_else(|| "exited".into()));
    let oom = if o.oom_killed { ", OOM killed" } else { "" };
    format!("{EXITED}{name} ({code}{oom})")
}

/// The reason of the early mark: the container's process ended, how is not known yet.
fn early_reason(name: &str) -> String {
    format!("{EXITED}{name}")
}

/// The container an early mark's reason names (container names have no spaces).
fn early_container(reason: &str) -> Option<&str> {
    reason.strip_prefix(EXITED).filter(|n| !n.contains(' '))
}

/// ECS restart policy: enabled, exit code not ignored, and the container ran at least
/// `restartAttemptPeriod` seconds since it last started.
fn restart_allowed(c: &ContainerDefinition, o: &Observed) -> bool {
    let Some(p) = c.restart_policy.as_ref().filter(|p| p.enabled) else {
        return false;
    };
    if o.exit_code
        .is_some_and(|code| p.ignored_exit_codes.contains(&code))
    {
        return false;
    }
    match (o.started_at, o.finished_at) {
        (Some(s), Some(f)) => (f - s).num_milliseconds() >= p.period_secs() as i64 * 1000,
        _ => false,
    }
}

impl TaskRunner {
    /// Not (or no longer) ours: whatever we still run for it must go.
    /// Not (or no longer) ours: whatever we still run for it must go, with SIGTERM and the
    /// container's own stopTimeout, never a bare SIGKILL.
    async fn not_ours(&self, id: &str) -> anyhow::Result<Action> {
        let leftovers = d::list_task(&self.docker, &self.instance, id).await?;
        for c in leftovers {
            if let Some(cid) = c.id.as_deref() {
                d::stop_graceful(&self.docker, cid).await?;
                d::remove(&self.docker, cid).await?;
            }
        }
        Ok(Action::Done)
    }

    /// A task still registered behind a load balancer is deregistered and drained before its
    /// containers get SIGTERM: while its target record exists (up to the deregistration delay
    /// plus a margin, in case no controller is there to finish it), hold the task in
    /// DEACTIVATING and look again shortly.
    async fn draining(&self, task: &Task) -> anyhow::Result<Option<Duration>> {
        let (kvs, _) = self.store.range(crate::model::lb::lb_keys::TARGETS).await?;
        let suffix = format!("/{}", task.metadata.name);
        let delay = kvs
            .iter()
            .filter(|kv| kv.key.ends_with(&suffix))
            .filter_map(|kv| serde_json::from_slice::<crate::model::lb::Target>(&kv.value).ok())
            .map(|t| t.deregistration_delay_seconds)
            .max();
        let Some(delay) = delay else {
            return Ok(None);
        };
        let since = task
            .status
            .stopping_at
            .or(task.status.stopped_at)
            .unwrap_or_else(now);
        if now() - since > chrono::Duration::seconds(delay as i64 + 5) {
            return Ok(None);
        }
        if task.status.last_status < TaskState::Deactivating {
            self.write_task(&task.metadata.name, Some(task), |t| {
                if t.is_stopped() || t.status.last_status >= TaskState::Deactivating {
                    return false;
                }
                t.status.last_status = TaskState::Deactivating;
                t.status.stopping_at = Some(now());
                true
            })
            .await?;
        }
        Ok(Some(Duration::from_millis(200)))
    }
}

enum Deps {
    Met,
    Wait,
    Never(String),
}

fn dependencies_met(c: &ContainerDefinition, observed: &BTreeMap<String, Observed>) -> Deps {
    for dep in &c.depends_on {
        let Some(o) = observed.get(&dep.container_name) else {
            return Deps::Wait;
        };
        match dep.condition {
            DependencyCondition::Start => {}
            DependencyCondition::Complete => {
                if !o.exited() {
                    return Deps::Wait;
                }
            }
            DependencyCondition::Success => {
                if !o.exited() {
                    return Deps::Wait;
                }
                if o.exit_code != Some(0) {
                    return Deps::Never(format!(
                        "dependency {} exited with {:?}, SUCCESS required",
                        dep.container_name, o.exit_code
                    ));
                }
            }
            DependencyCondition::Healthy => {
                if o.health == HealthStatus::Unhealthy {
                    return Deps::Never(format!("dependency {} is UNHEALTHY", dep.container_name));
                }
                if o.health != HealthStatus::Healthy {
                    return Deps::Wait;
                }
            }
        }
    }
    Deps::Met
}

/// ECS: HEALTHY only when every essential container with a check is healthy; UNHEALTHY when
/// any is unhealthy; UNKNOWN otherwise (including when no container has a check).
pub fn task_health(
    order: &[ContainerDefinition],
    observed: &BTreeMap<String, Observed>,
) -> HealthStatus {
    let checked: Vec<&ContainerDefinition> = order
        .iter()
        .filter(|c| c.is_essential() && c.health_check.is_some())
        .collect();
    if checked.is_empty() {
        return HealthStatus::Unknown;
    }
    let states: Vec<HealthStatus> = checked
        .iter()
        .map(|c| observed.get(&c.name).map(|o| o.health).unwrap_or_default())
        .collect();
    if states.contains(&HealthStatus::Unhealthy) {
        HealthStatus::Unhealthy
    } else if states.iter().all(|s| *s == HealthStatus::Healthy) {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unknown
    }
}

/// Containers in an order where every dependency comes before its dependents (stable;
/// validation rejects unknown names, and cycles fall back to definition order).
pub fn start_order(defs: &[ContainerDefinition]) -> Vec<ContainerDefinition> {
    let mut out: Vec<ContainerDefinition> = Vec::new();
    let mut left: Vec<&ContainerDefinition> = defs.iter().collect();
    while !left.is_empty() {
        let before = left.len();
        left.retain(|c| {
            let ready = c.depends_on.iter().all(|d| {
                out.iter().any(|o| o.name == d.container_name)
                    || !defs.iter().any(|x| x.name == d.container_name)
            });
            if ready {
                out.push((*c).clone());
            }
            !ready
        });
        if left.len() == before {
            out.extend(left.drain(..).cloned());
        }
    }
    out
}

#[async_trait]
impl Reconciler for TaskRunner {
    async fn reconcile(&self, id: &str) -> anyhow::Result<Action> {
        let task: Option<Task> = match objects::get(&*self.store, &keys::key(Kind::Task, id)).await
        {
            Ok(t) => t,
            // A joined agent may not read another instance's task: not ours.
            Err(objects::ObjectError::Store(e)) if crate::store::remote::is_denied(&e) => {
                return self.not_ours(id).await;
            }
            Err(e) => return Err(e.into()),
        };
        let Some(task) = task else {
            // An orphan: its task record is gone. Removed once older than the grace period,
            // so a record that is only briefly invisible never costs a running container.
            let mut wait = Duration::ZERO;
            for c in d::list_task(&self.docker, &self.instance, id).await? {
                let age = c
                    .created
                    .map(|t| chrono::Utc::now().timestamp() - t)
                    .unwrap_or(i64::MAX);
                let grace = ORPHAN_GRACE.as_secs() as i64;
                if age < grace {
                    wait = wait.max(Duration::from_secs((grace - age) as u64 + 1));
                    continue;
                }
                if let Some(cid) = c.id.as_deref() {
                    tracing::info!(task = %id, container = %cid, "removing orphaned container");
                    d::remove(&self.docker, cid).await?;
                }
            }
            return Ok(if wait.is_zero() {
                Action::Done
            } else {
                Action::RequeueAfter(wait)
            });
        };
        if task.status.container_instance.as_deref() != Some(self.instance.as_str()) {
            return self.not_ours(id).await;
        }
        if task.is_stopped() {
            // Stopped while we could not see it (declared lost, say): drain, then stop what
            // still runs gracefully before removing it.
            if !self.observed(id).await?.values().any(|o| o.running()) {
                self.remove_all(id).await?;
                return Ok(Action::Done);
            }
            if let Some(wait) = self.draining(&task).await? {
                return Ok(Action::RequeueAfter(wait));
            }
            for c in d::list_task(&self.docker, &self.instance, id).await? {
                if let Some(cid) = c.id.as_deref() {
                    d::stop_graceful(&self.docker, cid).await?;
                }
            }
            self.remove_all(id).await?;
            return Ok(Action::Done);
        }
        if self.is_fenced() {
            // Self-fenced: start nothing until the lease is held again.
            return Ok(Action::RequeueAfter(Duration::from_secs(2)));
        }
        if task.status.desired_status == DesiredStatus::Stopped {
            // A task whose essential container died has nothing left to drain.
            let died =
                task.status.stop_code.as_deref() == Some(stop_codes::ESSENTIAL_CONTAINER_EXITED);
            if !died {
                if let Some(wait) = self.draining(&task).await? {
                    return Ok(Action::RequeueAfter(wait));
                }
            }
            let td = self.taskdef(&task.spec.task_definition).await?;
            return self.stop_task(&task, td.as_ref(), None).await;
        }
        self.run_task(&task).await
    }

    async fn resync_keys(&self) -> anyhow::Result<Vec<String>> {
        let mut ids: Vec<String> = objects::list_tasks(&*self.store)
            .await?
            .into_iter()
            .filter(|t| {
                t.status.container_instance.as_deref() == Some(self.instance.as_str())
                    && !t.is_stopped()
            })
            .map(|t| t.metadata.name)
            .collect();
        for c in d::list_owned(&self.docker, &self.instance).await? {
            if let Some(t) = c.labels.as_ref().and_then(|l| l.get(d::LABEL_TASK)) {
                ids.push(t.clone());
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

pub type SharedRunner = Arc<TaskRunner>;
