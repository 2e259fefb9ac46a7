//! kube-sim: a simulated Kubernetes API server (and, with controllers plugged
//! in, a simulated Tekton) for tests and the quick start. Never used by
//! production code paths.
//!
//! Start it in-process with [`KubeSim::start`]; the [`KubeSimHandle`] gives the
//! endpoint, CA, admin credentials, a kubeconfig, user management, fault
//! injection and stop/start of the API server.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod discovery;
pub mod faults;
pub mod faults_json;
mod log_follow;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod table;
pub mod tekton;
pub mod tls;

use crate::api::Api;
use crate::auth::{ADMIN_GROUP, ADMIN_USER, Authenticator, Rule, User};
use crate::cluster::{Cluster, gvr};
use crate::faults::Faults;
use crate::server::RunningListener;
use crate::store::{Store, Writer, storage_kind};
use crate::tls::{ClientCert, Pki};
use base64::Engine;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

pub use crate::auth::Rule as AccessRule;
pub use crate::faults::{FaultAction, FaultRule};

/// Something started with the server that works on the cluster through
/// [`Cluster`] (the Tekton controller simulation). It spawns its own tasks.
pub type Controller = Box<dyn FnOnce(Arc<dyn Cluster>) + Send>;

pub struct KubeSimOptions {
    pub bind: IpAddr,
    /// HTTPS port; 0 picks a free one.
    pub port: u16,
    /// Also serve plain HTTP (no client certificates; tokens only) on this port (0 = free one).
    pub http_port: Option<u16>,
    /// Load `300-*.yaml` CRDs from here instead of the embedded copies.
    pub crd_dir: Option<PathBuf>,
    /// Watch events kept per resource for resuming watches; older → 410 Expired.
    pub history_limit: usize,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Name of a StorageClass created as the default one (`None`: no default class).
    pub default_storage_class: Option<String>,
    /// Fixed admin token (random if `None`).
    pub admin_token: Option<String>,
    /// Run the Tekton controller simulation with these options (`None`: no controller;
    /// PipelineRuns are then stored but never run).
    pub tekton: Option<tekton::ControllerOptions>,
    /// Further controllers, started after the Tekton one.
    pub controllers: Vec<Controller>,
    /// The `tekton.dev` versions served (`None`: v1 and v1beta1, as a
    /// current Tekton does); `["v1beta1"]` is a cluster with an older Tekton.
    /// Discovery, routing and `kubectl` see only these.
    pub tekton_versions: Option<Vec<String>>,
    /// Run the Tekton controller's steps for real as host processes, keeping
    /// pods' and claims' directories under this root (`None`: steps are
    /// simulated). Overrides `tekton.host_steps`.
    pub host_steps: Option<tekton::HostSteps>,
}

impl Default for KubeSimOptions {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            http_port: None,
            crd_dir: None,
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(5),
            default_storage_class: Some("standard".to_string()),
            admin_token: None,
            tekton: None,
            controllers: Vec::new(),
            tekton_versions: None,
            host_steps: None,
        }
    }
}

pub struct KubeSim;

/// The running simulator. Dropping it does not stop the server; call [`KubeSimHandle::shutdown`].
pub struct KubeSimHandle {
    api: Arc<Api>,
    pki: Arc<Pki>,
    tls: tokio_rustls::TlsAcceptor,
    https_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    listeners: Mutex<Vec<RunningListener>>,
    admin_token: String,
    admin_cert: ClientCert,
    tekton: Option<tekton::ControllerHandle>,
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

fn seed(store: &Store, crds: &[Value], default_sc: Option<&str>) {
    let nsk = storage_kind(&gvr::NAMESPACES).expect("namespaces");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let _ = store.create(
            &nsk,
            None,
            json!({"metadata": {"name": ns}}),
            Writer::Controller,
        );
    }
    if let Some(sc) = default_sc {
        let sck = storage_kind(&gvr::STORAGECLASSES).expect("storageclasses");
        let _ = store.create(
            &sck,
            None,
            json!({
                "metadata": {"name": sc, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "kube-sim.local/simulated",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate"
            }),
            Writer::Controller,
        );
    }
    let crdk = storage_kind(&gvr::CRDS).expect("crds");
    for crd in crds {
        let mut c = crd.clone();
        c["status"] = json!({
            "acceptedNames": c["spec"]["names"].clone(),
            "storedVersions": ["v1"],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
            ]
        });
        let _ = store.create(&crdk, None, c, Writer::Controller);
    }
}

impl KubeSim {
    pub async fn start(opts: KubeSimOptions) -> anyhow::Result<KubeSimHandle> {
        let crds: Vec<Value> = match &opts.crd_dir {
            Some(dir) => resources::load_crds(dir).map_err(anyhow::Error::msg)?,
            None => resources::embedded_crds().to_vec(),
        };
        let store = Store::new(opts.history_limit);
        seed(&store, &crds, opts.default_storage_class.as_deref());
        let auth = Arc::new(Authenticator::default());
        let admin_token = opts.admin_token.clone().unwrap_or_else(random_token);
        auth.add_token(
            &admin_token,
            User {
                name: ADMIN_USER.to_string(),
                groups: vec![ADMIN_GROUP.to_string()],
            },
        );
        let pki = Arc::new(Pki::generate()?);
        let admin_cert = pki.client_cert(ADMIN_USER, &[ADMIN_GROUP])?;
        let mut registry = resources::registry(&crds);
        if let Some(versions) = &opts.tekton_versions {
            registry.retain(|r| {
                r.gvr.group != "tekton.dev" || versions.iter().any(|v| v == r.gvr.version)
            });
        }
        let api = Arc::new(Api {
            store: store.clone(),
            registry,
            auth,
            faults: Arc::new(Faults::default()),
            server_address: std::sync::Mutex::new(String::new()),
            bookmark_interval: opts.bookmark_interval,
        });
        let tls = tokio_rustls::TlsAcceptor::from(pki.server_config()?);
        let https = server::bind(SocketAddr::new(opts.bind, opts.port))?;
        let https_addr = https.local_addr()?;
        *api.server_address.lock().unwrap_or_else(|p| p.into_inner()) = https_addr.to_string();
        let mut listeners = vec![server::spawn(https, Some(tls.clone()), api.clone())?];
        let mut http_addr = None;
        if let Some(port) = opts.http_port {
            let l = server::bind(SocketAddr::new(opts.bind, port))?;
            http_addr = Some(l.local_addr()?);
            listeners.push(server::spawn(l, None, api.clone())?);
        }
        let host_steps = opts.host_steps;
        let tekton = opts
            .tekton
            .map(|mut topts| {
                if host_steps.is_some() {
                    topts.host_steps = host_steps;
                }
                topts
            })
            .map(|topts| tekton::Controller::start(store.clone() as Arc<dyn Cluster>, topts));
        for c in opts.controllers {
            c(store.clone() as Arc<dyn Cluster>);
        }
        Ok(KubeSimHandle {
            api,
            pki,
            tls,
            https_addr,
            http_addr,
            listeners: Mutex::new(listeners),
            admin_token,
            admin_cert,
            tekton,
        })
    }
}

/// Which credentials a generated kubeconfig carries.
pub enum Credentials<'a> {
    Token(&'a str),
    ClientCert(&'a ClientCert),
}

impl KubeSimHandle {
    /// `https://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.https_addr)
    }

    /// `http://127.0.0.1:<port>` when plain HTTP is enabled.
    pub fn http_endpoint(&self) -> Option<String> {
        self.http_addr.map(|a| format!("http://{a}"))
    }

    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A client certificate for the admin user (CN=kube-sim:admin, O=system:masters).
    pub fn admin_cert(&self) -> &ClientCert {
        &self.admin_cert
    }

    /// The in-cluster view (what controllers get).
    pub fn cluster(&self) -> Arc<dyn Cluster> {
        self.api.store.clone()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.api.store
    }

    pub fn faults(&self) -> &Faults {
        &self.api.faults
    }

    /// The Tekton controller, when one was started (`KubeSimOptions::tekton`).
    pub fn tekton(&self) -> Option<&tekton::ControllerHandle> {
        self.tekton.as_ref()
    }

    /// Add a user authenticated by a new random bearer token, with these rules. Returns the token.
    pub fn add_token_user(&self, user: &str, groups: &[&str], rules: Vec<Rule>) -> String {
        let token = random_token();
        self.api.auth.add_token(
            &token,
            User {
                name: user.to_string(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
        );
        self.api.auth.set_rules(user, rules);
        token
    }

    /// Add a user authenticated by a client certificate (CN=user, O=groups) signed by the CA.
    pub fn add_cert_user(
        &self,
        user: &str,
        groups: &[&str],
        rules: Vec<Rule>,
    ) -> anyhow::Result<ClientCert> {
        let cert = self.pki.client_cert(user, groups)?;
        self.api.auth.set_rules(user, rules);
        Ok(cert)
    }

    /// Replace a user's rules.
    pub fn set_rules(&self, user: &str, rules: Vec<Rule>) {
        self.api.auth.set_rules(user, rules);
    }

    /// A kubeconfig for the admin (bearer token).
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml_for(Credentials::Token(&self.admin_token), "default")
    }

    /// Write the admin kubeconfig to `path`, readable by the owner only (it
    /// holds the token). Written to a temporary file beside it and renamed,
    /// so a reader never sees it half written and an existing file ends up
    /// with mode 0600 too.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(self.kubeconfig_yaml().as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    pub fn kubeconfig_yaml_for(&self, creds: Credentials<'_>, namespace: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let user = match creds {
            Credentials::Token(t) => format!("    token: {t}\n"),
            Credentials::ClientCert(c) => format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&c.cert_pem),
                b64(&c.key_pem)
            ),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: kube-sim-user\n  user:\n{user}contexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim-user\n    namespace: {namespace}\ncurrent-context: kube-sim\n",
            self.endpoint(),
            b64(&self.pki.ca_pem),
        )
    }

    /// A kube-rs config for the admin.
    pub async fn kube_config(&self) -> anyhow::Result<kube::Config> {
        self.kube_config_for(Credentials::Token(&self.admin_token))
            .await
    }

    pub async fn kube_config_for(&self, creds: Credentials<'_>) -> anyhow::Result<kube::Config> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml_for(creds, "default"))?;
        Ok(
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?,
        )
    }

    pub async fn kube_client(&self) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.kube_config().await?)?)
    }

    /// The API server goes away: listeners close and open connections (watches included) drop.
    pub async fn stop_server(&self) {
        let mut ls = self.listeners.lock().await;
        for l in ls.drain(..) {
            l.stop().await;
        }
    }

    /// The API server comes back on the same address(es) with the same state.
    pub async fn start_server(&self) -> anyhow::Result<()> {
        let mut ls = self.listeners.lock().await;
        if !ls.is_empty() {
            return Ok(());
        }
        ls.push(server::spawn(
            server::bind(self.https_addr)?,
            Some(self.tls.clone()),
            self.api.clone(),
        )?);
        if let Some(a) = self.http_addr {
            ls.push(server::spawn(server::bind(a)?, None, self.api.clone())?);
        }
        Ok(())
    }

    pub async fn shutdown(self) {
        self.stop_server().await;
    }
}
