//! The simulator's state machine and route handlers.

// Handlers return the error *response* as `Err`; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::clock::rfc3339;
use super::fault::{FaultAction, Faults};
use super::ledger::{BillableKind, Ledger};
use super::{DeleteRefusal, Outcome, RecordedRequest, SimConfig};
use crate::request::{decode_component, parse_query};
use crate::{ServerAction, ServerState};

type Resp = http::Response<Bytes>;

const X86_TYPES: &[&str] = &[
    "DEV1-S",
    "DEV1-M",
    "DEV1-L",
    "DEV1-XL",
    "GP1-XS",
    "GP1-S",
    "GP1-M",
    "PRO2-XXS",
    "PRO2-XS",
    "PRO2-S",
    "PRO2-M",
    "PRO2-L",
    "POP2-2C-8G",
    "POP2-4C-16G",
    "POP2-8C-32G",
    "PLAY2-PICO",
    "PLAY2-NANO",
    "PLAY2-MICRO",
];
const ARM_TYPES: &[&str] = &["AMP2-C1", "AMP2-C2", "AMP2-C4", "AMP2-C8", "COPARM1-2C-8G"];
const INSTANCE_ZONES: &[&str] = &[
    "fr-par-1", "fr-par-2", "fr-par-3", "nl-ams-1", "nl-ams-2", "nl-ams-3", "pl-waw-1", "pl-waw-2",
    "pl-waw-3", "it-mil-1",
];
const EM_ZONES: &[&str] = &[
    "fr-par-1", "fr-par-2", "nl-ams-1", "nl-ams-2", "pl-waw-2", "pl-waw-3",
];
const REGIONS: &[&str] = &["fr-par", "nl-ams", "pl-waw", "it-mil"];
/// (name, stock, cloud-init supported)
const EM_OFFERS: &[(&str, &str, bool)] = &[
    ("EM-B220E-NVME", "available", true),
    ("EM-I220E-NVME", "available", false),
    ("EM-A115X-SSD", "empty", true),
];
/// (name, version)
const EM_OS: &[(&str, &str)] = &[
    ("Ubuntu", "24.04 LTS (Noble Numbat)"),
    ("Ubuntu", "22.04 LTS (Jammy Jellyfish)"),
    ("Debian", "12 (Bookworm)"),
];
const PN_OPTION: &str = "Private Network";

fn fnv(parts: &[&str], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn uuid_from(a: u64, b: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

fn stable_id(parts: &[&str]) -> String {
    uuid_from(fnv(parts, 1), fnv(parts, 2))
}

fn region_of(zone: &str) -> String {
    match zone.rsplit_once('-') {
        Some((r, _)) => r.to_owned(),
        None => zone.to_owned(),
    }
}

struct Image {
    id: String,
    label: String,
    zone: String,
    arch: &'static str,
    image_type: &'static str,
    compat: &'static [&'static str],
}

struct DynIp {
    id: String,
    address: String,
    attached: bool,
}

pub(super) struct Nic {
    id: String,
    pn_id: String,
    mac: String,
    state: &'static str,
    tags: Vec<String>,
    created: Duration,
    modified: Duration,
    ipam_ids: Vec<String>,
}

pub(super) struct InstServer {
    pub(super) id: String,
    name: String,
    project: String,
    organization: String,
    zone: String,
    commercial_type: String,
    image_id: String,
    image_label: String,
    arch: &'static str,
    tags: Vec<String>,
    pub(super) state: ServerState,
    state_detail: &'static str,
    created: Duration,
    modified: Duration,
    dynamic_ip_required: bool,
    routed_ip_enabled: bool,
    protected: bool,
    boot_type: String,
    volumes: Vec<String>,
    nics: Vec<Nic>,
    user_data: BTreeMap<String, Bytes>,
    dynamic_ip: Option<DynIp>,
    generation: u64,
    mac: String,
}

impl InstServer {
    pub(super) fn allowed_actions(&self) -> Vec<ServerAction> {
        use ServerAction as A;
        match (&self.state, self.state_detail) {
            (ServerState::Stopped, _) => vec![A::Poweron, A::Backup],
            (ServerState::Starting, _) => vec![A::StopInPlace, A::Backup],
            (ServerState::Running, _) => {
                vec![
                    A::Poweroff,
                    A::Terminate,
                    A::Reboot,
                    A::StopInPlace,
                    A::Backup,
                ]
            }
            (ServerState::Stopping, "terminating") => vec![],
            (ServerState::Stopping, _) => vec![A::StopInPlace, A::Backup],
            (ServerState::StoppedInPlace, _) => {
                vec![A::Poweron, A::Poweroff, A::Terminate, A::Reboot, A::Backup]
            }
            _ => vec![],
        }
    }
}

struct Volume {
    id: String,
    name: String,
    size: u64,
    volume_type: String,
    zone: String,
    server_id: Option<String>,
}

struct SimSubnet {
    id: String,
    cidr: String,
    created: Duration,
    v4: Option<(u32, u8)>,
    v6_prefix: Option<String>,
    next: u32,
}

struct Pn {
    id: String,
    name: String,
    project: String,
    organization: String,
    region: String,
    tags: Vec<String>,
    vpc_id: String,
    created: Duration,
    subnets: Vec<SimSubnet>,
}

struct IpamIp {
    id: String,
    address: String,
    is_ipv6: bool,
    project: String,
    region: String,
    subnet_id: String,
    pn_id: String,
    vpc_id: String,
    resource_type: &'static str,
    resource_id: String,
    mac: String,
    resource_name: String,
    created: Duration,
    /// Zone of a zonal (public) IP; private IPs have a subnet instead.
    zonal: Option<String>,
}

struct EmOption {
    id: String,
    name: String,
    status: &'static str,
    pn: bool,
}

struct EmInstall {
    os_id: String,
    hostname: String,
    ssh_key_ids: Vec<String>,
    status: &'static str,
}

struct EmServer {
    id: String,
    name: String,
    description: String,
    project: String,
    organization: String,
    zone: String,
    offer_id: String,
    offer_name: String,
    tags: Vec<String>,
    status: &'static str,
    install: Option<EmInstall>,
    options: Vec<EmOption>,
    ips: Vec<(String, String, &'static str)>,
    created: Duration,
    updated: Duration,
    generation: u64,
}

struct Spn {
    id: String,
    server_id: String,
    pn_id: String,
    project: String,
    zone: String,
    vlan: u32,
    status: &'static str,
    created: Duration,
    updated: Duration,
}

#[derive(Clone)]
enum Ev {
    Inst {
        id: String,
        generation: u64,
        to: InstTarget,
    },
    NicReady {
        server: String,
        nic: String,
    },
    EmDelivered {
        id: String,
    },
    EmInstalled {
        id: String,
    },
    EmOption {
        id: String,
        option: String,
    },
    EmPower {
        id: String,
        generation: u64,
        status: &'static str,
    },
    EmGone {
        id: String,
    },
    SpnAttached {
        id: String,
    },
    SpnGone {
        id: String,
    },
}

#[derive(Clone, Copy)]
enum InstTarget {
    Running,
    Stopped,
    StoppedInPlace,
    Gone,
}

struct Q(Vec<(String, String)>);

impl Q {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
    fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
            .collect()
    }
    fn bool(&self, k: &str) -> Result<Option<bool>, Resp> {
        match self.get(k) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(invalid_argument(k, "format", "must be true or false")),
        }
    }
}

fn response(status: u16, body: Bytes, content_type: &str) -> Resp {
    let mut r = http::Response::new(body);
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn json_resp(status: u16, v: Value) -> Resp {
    response(status, Bytes::from(v.to_string()), "application/json")
}

fn empty(status: u16) -> Resp {
    response(status, Bytes::new(), "application/json")
}

fn not_found(resource: &str, id: &str) -> Resp {
    json_resp(
        404,
        json!({"type":"not_found","message":"resource is not found","resource":resource,"resource_id":id}),
    )
}

fn untyped(status: u16, message: &str) -> Resp {
    json_resp(status, json!({ "message": message }))
}

fn legacy(message: &str) -> Resp {
    json_resp(
        400,
        json!({"type":"invalid_request_error","message":message}),
    )
}

fn invalid_argument(name: &str, reason: &str, help: &str) -> Resp {
    json_resp(
        400,
        json!({"type":"invalid_arguments","message":"invalid argument(s)","details":[{"argument_name":name,"reason":reason,"help_message":help}]}),
    )
}

fn with_header(mut r: Resp, name: &'static str, value: &str) -> Resp {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
    r
}

fn page_params(q: &Q, size_key: &str, default: usize) -> Result<(usize, usize), Resp> {
    let page = match q.get("page") {
        None => 1,
        Some(p) => p
            .parse::<usize>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| invalid_argument("page", "constraint", "must be >= 1"))?,
    };
    let size = match q.get(size_key) {
        None => default,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|s| (1..=100).contains(s))
            .ok_or_else(|| invalid_argument(size_key, "constraint", "must be between 1 and 100"))?,
    };
    Ok((page, size))
}

fn slice_page<T>(items: Vec<T>, page: usize, size: usize) -> Vec<T> {
    items
        .into_iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .collect()
}

fn body_json(body: &Bytes) -> Result<serde_json::Map<String, Value>, Resp> {
    if body.is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(invalid_argument(
            "body",
            "format",
            "the body must be a JSON object",
        )),
    }
}

fn str_field(m: &serde_json::Map<String, Value>, k: &str) -> Option<String> {
    m.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn tags_field(m: &serde_json::Map<String, Value>, k: &str) -> Vec<String> {
    m.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if !(8..=29).contains(&len) {
        return None;
    }
    let mask = u32::MAX << (32 - u32::from(len));
    Some((u32::from(ip) & mask, len))
}

pub(super) struct State {
    pub(super) config: SimConfig,
    pub(super) faults: Faults,
    pub(super) log: Vec<RecordedRequest>,
    pub(super) ledger: Ledger,
    pub(super) servers: Vec<InstServer>,
    volumes: Vec<Volume>,
    pns: Vec<Pn>,
    ips: Vec<IpamIp>,
    images: Vec<Image>,
    em_servers: Vec<EmServer>,
    spns: Vec<Spn>,
    events: Vec<(Duration, u64, Ev)>,
    counter: u64,
    now: Duration,
    subnet_counter: u32,
    vlan_counter: u32,
    mac_counter: u32,
    public_counter: u32,
    /// Elastic Metal installs still to end in `error` (fault injection).
    pub(super) em_install_failures: u32,
}

impl State {
    pub(super) fn new(config: SimConfig) -> Self {
        let mut images = Vec::new();
        for zone in INSTANCE_ZONES {
            for label in ["ubuntu_noble", "ubuntu_jammy", "debian_bookworm"] {
                for image_type in ["instance_sbs", "instance_local"] {
                    for (arch, compat) in [("x86_64", X86_TYPES), ("arm64", ARM_TYPES)] {
                        images.push(Image {
                            id: stable_id(&["image", zone, label, image_type, arch]),
                            label: label.to_owned(),
                            zone: (*zone).to_owned(),
                            arch,
                            image_type,
                            compat,
                        });
                    }
                }
            }
        }
        Self {
            config,
            faults: Faults::default(),
            log: Vec::new(),
            ledger: Ledger::default(),
            servers: Vec::new(),
            volumes: Vec::new(),
            pns: Vec::new(),
            ips: Vec::new(),
            images,
            em_servers: Vec::new(),
            spns: Vec::new(),
            events: Vec::new(),
            counter: 0,
            now: Duration::ZERO,
            subnet_counter: 0,
            vlan_counter: 0,
            mac_counter: 0,
            public_counter: 0,
            em_install_failures: 0,
        }
    }

    fn new_id(&mut self) -> String {
        self.counter += 1;
        let c = self.counter.to_string();
        stable_id(&["sim", &c])
    }

    fn ts(&self, t: Duration) -> String {
        rfc3339(t)
    }

    fn schedule(&mut self, after: Duration, ev: Ev) {
        self.counter += 1;
        self.events
            .push((self.now.saturating_add(after), self.counter, ev));
    }

    /// Applies every event due at or before `now`, in order, each at its due time.
    pub(super) fn tick(&mut self, now: Duration) {
        loop {
            let next = self
                .events
                .iter()
                .enumerate()
                .filter(|(_, (due, _, _))| *due <= now)
                .min_by_key(|(_, (due, seq, _))| (*due, *seq))
                .map(|(i, _)| i);
            let Some(i) = next else { break };
            let (due, _, ev) = self.events.remove(i);
            self.now = due;
            self.apply(ev);
        }
        self.now = now.max(self.now);
    }

    fn set_inst_state(&mut self, idx: usize, state: ServerState, detail: &'static str) {
        let now = self.now;
        let s = &mut self.servers[idx];
        s.state = state;
        s.state_detail = detail;
        s.modified = now;
    }

    fn apply(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Inst { id, generation, to } => {
                let Some(idx) = self
                    .servers
                    .iter()
                    .position(|s| s.id == id && s.generation == generation)
                else {
                    return;
                };
                match to {
                    InstTarget::Running => {
                        self.set_inst_state(idx, ServerState::Running, "booting kernel");
                        if let Some(ip) = &mut self.servers[idx].dynamic_ip {
                            ip.attached = true;
                        }
                    }
                    InstTarget::Stopped => {
                        self.set_inst_state(idx, ServerState::Stopped, "");
                        if let Some(ip) = self.servers[idx].dynamic_ip.take() {
                            self.ledger.close(BillableKind::PublicIp, &ip.id, now);
                            self.ips.retain(|row| row.id != ip.id);
                        }
                    }
                    InstTarget::StoppedInPlace => {
                        self.set_inst_state(idx, ServerState::StoppedInPlace, "")
                    }
                    InstTarget::Gone => self.remove_server(idx, true),
                }
            }
            Ev::NicReady { server, nic } => {
                if let Some(s) = self.servers.iter_mut().find(|s| s.id == server)
                    && let Some(n) = s.nics.iter_mut().find(|n| n.id == nic)
                {
                    n.state = "available";
                    n.modified = now;
                }
            }
            Ev::EmDelivered { id } => {
                self.public_counter += 1;
                let n = self.public_counter;
                let (v4id, v6id) = (self.new_id(), self.new_id());
                let install_pending = {
                    let Some(s) = self.em_servers.iter_mut().find(|s| s.id == id) else {
                        return;
                    };
                    s.status = "ready";
                    s.updated = now;
                    s.ips = vec![
                        (
                            v4id,
                            format!("51.159.{}.{}", 100 + (n / 250) % 100, 2 + n % 250),
                            "IPv4",
                        ),
                        (v6id, format!("2001:bc8:1201:{n:x}::1"), "IPv6"),
                    ];
                    for o in &mut s.options {
                        o.status = "option_status_enable";
                    }
                    match &mut s.install {
                        Some(i) => {
                            i.status = "installing";
                            true
                        }
                        None => false,
                    }
                };
                if install_pending {
                    let d = self.config.durations.em_install;
                    self.schedule(d, Ev::EmInstalled { id });
                }
            }
            Ev::EmInstalled { id } => {
                if let Some(s) = self.em_servers.iter_mut().find(|s| s.id == id)
                    && let Some(i) = &mut s.install
                    && i.status == "installing"
                {
                    if self.em_install_failures > 0 {
                        self.em_install_failures -= 1;
                        i.status = "error";
                    } else {
                        i.status = "completed";
                    }
                    s.updated = now;
                }
            }
            Ev::EmOption { id, option } => {
                if let Some(s) = self.em_servers.iter_mut().find(|s| s.id == id) {
                    if let Some(o) = s
                        .options
                        .iter_mut()
                        .find(|o| o.id == option && o.status == "option_status_enabling")
                    {
                        o.status = "option_status_enable";
                    }
                    s.options
                        .retain(|o| !(o.id == option && o.status == "option_status_disabling"));
                    s.updated = now;
                }
            }
            Ev::EmPower {
                id,
                generation,
                status,
            } => {
                if let Some(s) = self
                    .em_servers
                    .iter_mut()
                    .find(|s| s.id == id && s.generation == generation)
                {
                    s.status = status;
                    s.updated = now;
                }
            }
            Ev::EmGone { id } => {
                self.em_servers.retain(|s| s.id != id);
            }
            Ev::SpnAttached { id } => {
                if let Some(s) = self
                    .spns
                    .iter_mut()
                    .find(|s| s.id == id && s.status == "attaching")
                {
                    s.status = "attached";
                    s.updated = now;
                }
            }
            Ev::SpnGone { id } => {
                self.spns.retain(|s| s.id != id);
                self.ips.retain(|ip| ip.resource_id != id);
            }
        }
    }

    fn remove_server(&mut self, idx: usize, terminate: bool) {
        let now = self.now;
        let s = self.servers.remove(idx);
        self.ledger.close(BillableKind::InstanceServer, &s.id, now);
        if let Some(ip) = &s.dynamic_ip {
            self.ledger.close(BillableKind::PublicIp, &ip.id, now);
            self.ips.retain(|row| row.id != ip.id);
        }
        let nic_ids: Vec<&str> = s.nics.iter().map(|n| n.id.as_str()).collect();
        self.ips
            .retain(|ip| !nic_ids.contains(&ip.resource_id.as_str()));
        let mut deleted = Vec::new();
        for v in self
            .volumes
            .iter_mut()
            .filter(|v| v.server_id.as_deref() == Some(s.id.as_str()))
        {
            v.server_id = None;
            if terminate && v.volume_type != "sbs_volume" {
                deleted.push(v.id.clone());
            }
        }
        for id in deleted {
            self.volumes.retain(|v| v.id != id);
            self.ledger.close(BillableKind::Volume, &id, now);
        }
    }

    pub(super) fn instance_infos(&self) -> Vec<super::InstanceServerInfo> {
        self.servers
            .iter()
            .map(|s| super::InstanceServerInfo {
                id: s.id.clone(),
                name: s.name.clone(),
                zone: s.zone.clone(),
                state: s.state.clone(),
                state_detail: s.state_detail.to_owned(),
                tags: s.tags.clone(),
                private_networks: s.nics.iter().map(|n| n.pn_id.clone()).collect(),
                user_data_keys: s.user_data.keys().cloned().collect(),
                has_public_ip: s.dynamic_ip.is_some(),
            })
            .collect()
    }

    pub(super) fn baremetal_infos(&self) -> Vec<super::BaremetalServerInfo> {
        self.em_servers
            .iter()
            .map(|s| super::BaremetalServerInfo {
                id: s.id.clone(),
                name: s.name.clone(),
                zone: s.zone.clone(),
                status: s.status.to_owned(),
                install_status: s.install.as_ref().map(|i| i.status.to_owned()),
                options: s
                    .options
                    .iter()
                    .map(|o| (o.name.clone(), o.status.to_owned()))
                    .collect(),
                private_networks: self
                    .spns
                    .iter()
                    .filter(|p| p.server_id == s.id)
                    .map(|p| (p.pn_id.clone(), p.vlan, p.status.to_owned()))
                    .collect(),
            })
            .collect()
    }

    pub(super) fn user_data(&self, id: &str, key: &str) -> Option<Bytes> {
        self.servers
            .iter()
            .find(|s| s.id == id)?
            .user_data
            .get(key)
            .cloned()
    }

    pub(super) fn set_locked(&mut self, id: &str, locked: bool) -> bool {
        let Some(idx) = self.servers.iter().position(|s| s.id == id) else {
            return false;
        };
        self.servers[idx].generation += 1;
        if locked {
            self.set_inst_state(idx, ServerState::Locked, "");
        } else {
            self.set_inst_state(idx, ServerState::Stopped, "");
        }
        true
    }

    pub(super) fn process(&mut self, req: http::Request<Bytes>, now: Duration) -> Outcome {
        self.tick(now);
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let (mut response, dropped, latency, faulted) = match self.faults.check(&method, &path) {
            Some(FaultAction::Respond { status, body }) => {
                let ct = if serde_json::from_slice::<Value>(&body).is_ok() {
                    "application/json"
                } else {
                    "text/plain"
                };
                (response(status, body, ct), false, None, true)
            }
            Some(FaultAction::RateLimit {
                with_body,
                retry_after,
            }) => {
                let mut r = if with_body {
                    json_resp(
                        429,
                        json!({"type":"too_many_requests","message":"too many requests","help_message":"slow down","limit":{"quota":100,"window_seconds":1},"reset_seconds":retry_after.unwrap_or(1)}),
                    )
                } else {
                    response(429, Bytes::new(), "text/plain")
                };
                if let Some(s) = retry_after {
                    r = with_header(r, "retry-after", &s.to_string());
                }
                (r, false, None, true)
            }
            Some(FaultAction::DropResponse) => (self.route(&req), true, None, true),
            Some(FaultAction::Latency(d)) => (self.route(&req), false, Some(d), false),
            None => (self.route(&req), false, None, false),
        };
        let rid = self.new_id();
        if let Ok(v) = http::HeaderValue::from_str(&rid) {
            response.headers_mut().insert("x-request-id", v);
        }
        self.log.push(RecordedRequest {
            method,
            path,
            query,
            body: req.body().clone(),
            status: response.status().as_u16(),
            at: now,
            faulted,
        });
        Outcome {
            response,
            dropped,
            latency,
        }
    }

    fn route(&mut self, req: &http::Request<Bytes>) -> Resp {
        let token = req
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok());
        if token != Some(self.config.token.as_str()) {
            return json_resp(
                401,
                json!({"message":"authentication is denied","method":"api_key","reason":"not_found","type":"denied_authentication"}),
            );
        }
        let segs: Vec<String> = req
            .uri()
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode_component)
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let q = Q(parse_query(req.uri().query().unwrap_or("")));
        let body = req.body();
        let m = req.method().as_str();
        let result = match (m, segs.as_slice()) {
            ("GET", ["marketplace", "v2", "local-images"]) => self.list_images(&q),
            (_, ["instance", "v1", "zones", zone, rest @ ..]) => {
                if !INSTANCE_ZONES.contains(zone) {
                    return invalid_argument("zone", "constraint", "unknown zone");
                }
                self.route_instance(m, zone, rest, &q, req)
            }
            (_, ["block", "v1alpha1", "zones", zone, "volumes", id]) if m == "DELETE" => {
                self.delete_volume(zone, id)
            }
            (_, ["vpc", "v2", "regions", region, rest @ ..]) => {
                if !REGIONS.contains(region) {
                    return invalid_argument("region", "constraint", "unknown region");
                }
                self.route_vpc(m, region, rest, &q, body)
            }
            ("GET", ["ipam", "v1", "regions", region, "ips"]) => {
                if !REGIONS.contains(region) {
                    return invalid_argument("region", "constraint", "unknown region");
                }
                self.list_ips(region, &q)
            }
            (_, ["baremetal", "v1", "zones", zone, rest @ ..]) => {
                if !EM_ZONES.contains(zone) {
                    return untyped(400, "zone is not available");
                }
                self.route_em(m, zone, rest, &q, body)
            }
            _ => Err(untyped(404, "Not Found")),
        };
        result.unwrap_or_else(|e| e)
    }

    // ----- marketplace -----------------------------------------------------

    fn list_images(&mut self, q: &Q) -> Result<Resp, Resp> {
        let (page, size) = page_params(q, "page_size", 20)?;
        let mut items: Vec<&Image> = self
            .images
            .iter()
            .filter(|i| q.get("image_label").is_none_or(|l| l == i.label))
            .filter(|i| q.get("zone").is_none_or(|z| z == i.zone))
            .filter(|i| {
                q.get("type")
                    .is_none_or(|t| t == "unknown_type" || t == i.image_type)
            })
            .collect();
        items.sort_by(|a, b| a.image_type.cmp(b.image_type).then(a.arch.cmp(b.arch)));
        let total = items.len();
        let page_items: Vec<Value> = slice_page(items, page, size)
            .into_iter()
            .map(|i| {
                json!({"id":i.id,"arch":i.arch,"zone":i.zone,"compatible_commercial_types":i.compat,"label":i.label,"type":i.image_type})
            })
            .collect();
        Ok(json_resp(
            200,
            json!({"local_images":page_items,"total_count":total}),
        ))
    }

    // ----- instance --------------------------------------------------------

    fn route_instance(
        &mut self,
        m: &str,
        zone: &str,
        rest: &[&str],
        q: &Q,
        req: &http::Request<Bytes>,
    ) -> Result<Resp, Resp> {
        let body = req.body();
        match (m, rest) {
            ("POST", ["servers"]) => self.create_server(zone, body),
            ("GET", ["servers"]) => self.list_servers(zone, q),
            ("GET", ["servers", id]) => {
                let idx = self.server_idx(zone, id)?;
                Ok(json_resp(200, json!({"server": self.server_json(idx)})))
            }
            ("PATCH", ["servers", id]) => self.patch_server(zone, id, body),
            ("DELETE", ["servers", id]) => self.delete_server(zone, id),
            ("POST", ["servers", id, "action"]) => self.server_action(zone, id, body),
            ("GET", ["servers", id, "user_data"]) => {
                let idx = self.server_idx(zone, id)?;
                let keys: Vec<&String> = self.servers[idx].user_data.keys().collect();
                Ok(json_resp(200, json!({ "user_data": keys })))
            }
            ("GET", ["servers", id, "user_data", key]) => {
                let idx = self.server_idx(zone, id)?;
                match self.servers[idx].user_data.get(*key) {
                    Some(v) => Ok(response(200, v.clone(), "text/plain")),
                    None => Ok(response(404, Bytes::new(), "text/plain")),
                }
            }
            ("PATCH", ["servers", id, "user_data", key]) => {
                let idx = self.server_idx(zone, id)?;
                let ct = req
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !ct.starts_with("text/plain") {
                    return Err(legacy("user data must be sent as text/plain"));
                }
                self.servers[idx]
                    .user_data
                    .insert((*key).to_owned(), body.clone());
                Ok(empty(204))
            }
            ("DELETE", ["servers", id, "user_data", key]) => {
                let idx = self.server_idx(zone, id)?;
                match self.servers[idx].user_data.remove(*key) {
                    Some(_) => Ok(empty(204)),
                    None => Ok(response(404, Bytes::new(), "text/plain")),
                }
            }
            ("POST", ["servers", id, "private_nics"]) => self.create_nic(zone, id, body),
            ("GET", ["servers", id, "private_nics"]) => {
                let idx = self.server_idx(zone, id)?;
                let (page, size) = page_params(q, "per_page", 50)?;
                let s = &self.servers[idx];
                let total = s.nics.len();
                let items: Vec<Value> = slice_page(s.nics.iter().collect(), page, size)
                    .into_iter()
                    .map(|n| self.nic_json(s, n))
                    .collect();
                Ok(with_header(
                    json_resp(200, json!({"private_nics":items,"total_count":total})),
                    "x-total-count",
                    &total.to_string(),
                ))
            }
            ("GET", ["servers", id, "private_nics", nic]) => {
                let idx = self.server_idx(zone, id)?;
                let s = &self.servers[idx];
                let n = s
                    .nics
                    .iter()
                    .find(|n| n.id == *nic)
                    .ok_or_else(|| not_found("instance_private_nic", nic))?;
                Ok(json_resp(200, json!({"private_nic": self.nic_json(s, n)})))
            }
            ("PATCH", ["servers", id, "private_nics", nic]) => {
                let idx = self.server_idx(zone, id)?;
                let m = body_json(body)?;
                let now = self.now;
                let s = &mut self.servers[idx];
                let n = s
                    .nics
                    .iter_mut()
                    .find(|n| n.id == *nic)
                    .ok_or_else(|| not_found("instance_private_nic", nic))?;
                if m.contains_key("tags") {
                    n.tags = tags_field(&m, "tags");
                }
                n.modified = now;
                let s = &self.servers[idx];
                let n = s
                    .nics
                    .iter()
                    .find(|n| n.id == *nic)
                    .ok_or_else(|| not_found("instance_private_nic", nic))?;
                Ok(json_resp(200, self.nic_json(s, n)))
            }
            ("DELETE", ["servers", id, "private_nics", nic]) => {
                let idx = self.server_idx(zone, id)?;
                let s = &mut self.servers[idx];
                let before = s.nics.len();
                s.nics.retain(|n| n.id != *nic);
                if s.nics.len() == before {
                    return Err(not_found("instance_private_nic", nic));
                }
                self.ips.retain(|ip| ip.resource_id != *nic);
                Ok(empty(204))
            }
            ("DELETE", ["volumes", id]) => self.delete_volume(zone, id),
            _ => Err(untyped(404, "Not Found")),
        }
    }

    fn server_idx(&self, zone: &str, id: &str) -> Result<usize, Resp> {
        self.servers
            .iter()
            .position(|s| s.id == id && s.zone == zone)
            .ok_or_else(|| not_found("instance_server", id))
    }

    fn nic_json(&self, s: &InstServer, n: &Nic) -> Value {
        json!({
            "id": n.id, "server_id": s.id, "private_network_id": n.pn_id, "mac_address": n.mac,
            "state": n.state, "tags": n.tags, "creation_date": self.ts(n.created),
            "modification_date": self.ts(n.modified), "zone": s.zone, "ipam_ip_ids": n.ipam_ids,
        })
    }

    fn server_json(&self, idx: usize) -> Value {
        let s = &self.servers[idx];
        let public_ips: Vec<Value> = s
            .dynamic_ip
            .iter()
            .map(|ip| {
                json!({"id":ip.id,"address":ip.address,"gateway":"62.210.0.1","netmask":"32","family":"inet","dynamic":true,
                   "provisioning_mode":"dhcp","tags":[],"state": if ip.attached {"attached"} else {"pending"},"ipam_id":ip.id})
            })
            .collect();
        let mut volumes = serde_json::Map::new();
        for (i, vid) in s.volumes.iter().enumerate() {
            if let Some(v) = self.volumes.iter().find(|v| &v.id == vid) {
                volumes.insert(
                    i.to_string(),
                    json!({"id":v.id,"name":v.name,"size":v.size,"volume_type":v.volume_type,"state":"available","boot":false,"zone":v.zone}),
                );
            }
        }
        let nics: Vec<Value> = s.nics.iter().map(|n| self.nic_json(s, n)).collect();
        json!({
            "id": s.id, "name": s.name, "organization": s.organization, "project": s.project, "zone": s.zone,
            "commercial_type": s.commercial_type, "arch": s.arch, "hostname": s.name, "tags": s.tags,
            "state": s.state.as_str(), "state_detail": s.state_detail,
            "allowed_actions": s.allowed_actions().iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            "creation_date": self.ts(s.created), "modification_date": self.ts(s.modified),
            "dynamic_ip_required": s.dynamic_ip_required, "routed_ip_enabled": s.routed_ip_enabled,
            "enable_ipv6": false, "protected": s.protected,
            "image": {"id": s.image_id, "name": s.image_label, "arch": s.arch, "zone": s.zone},
            "boot_type": s.boot_type, "public_ips": public_ips.clone(), "public_ip": public_ips.first(),
            "private_ip": null, "mac_address": s.mac, "location": null, "volumes": volumes,
            "security_group": {"id": stable_id(&["sg", &s.zone, &s.project]), "name": "Default security group"},
            "placement_group": null, "private_nics": nics, "maintenances": [], "filesystems": [],
            "end_of_service": false,
        })
    }

    fn create_server(&mut self, zone: &str, body: &Bytes) -> Result<Resp, Resp> {
        let m = body_json(body)?;
        let mut details = Vec::new();
        let commercial_type = str_field(&m, "commercial_type");
        let image = str_field(&m, "image");
        if commercial_type.is_none() {
            details.push(json!({"argument_name":"commercial_type","reason":"required","help_message":"commercial_type is required"}));
        }
        if image.is_none() {
            details.push(json!({"argument_name":"image","reason":"required","help_message":"image is required"}));
        }
        if let Some(v) = m.get("volumes")
            && !v.is_object()
            && !v.is_null()
        {
            details.push(json!({"argument_name":"volumes","reason":"format","help_message":"volumes must be a map"}));
        }
        if !details.is_empty() {
            return Err(json_resp(
                400,
                json!({"type":"invalid_arguments","message":"invalid argument(s)","details":details}),
            ));
        }
        let (commercial_type, image) = (
            commercial_type.unwrap_or_default(),
            image.unwrap_or_default(),
        );
        let project = str_field(&m, "project");
        let organization = str_field(&m, "organization");
        if project.is_some() && organization.is_some() {
            return Err(invalid_argument(
                "project",
                "constraint",
                "only one of project and organization may be set",
            ));
        }
        let project = project.unwrap_or_else(|| self.config.project_id.clone());
        let img = self
            .images
            .iter()
            .find(|i| i.id == image && i.zone == zone)
            .ok_or_else(|| not_found("instance_image", &image))?;
        if !img.compat.contains(&commercial_type.as_str()) {
            return Err(invalid_argument(
                "commercial_type",
                "constraint",
                "image is not compatible with this commercial type",
            ));
        }
        let (arch, label, image_type) = (img.arch, img.label.clone(), img.image_type);
        let id = self.new_id();
        let name = str_field(&m, "name").unwrap_or_else(|| format!("scw-{}", &id[..8]));
        let root = m.get("volumes").and_then(|v| v.get("0"));
        let size = root
            .and_then(|r| r.get("size"))
            .and_then(Value::as_u64)
            .unwrap_or(10_000_000_000);
        let vtype = root
            .and_then(|r| r.get("volume_type"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                if image_type == "instance_sbs" {
                    "sbs_volume".into()
                } else {
                    "l_ssd".into()
                }
            });
        let vid = self.new_id();
        let now = self.now;
        self.volumes.push(Volume {
            id: vid.clone(),
            name: format!("{name}-root"),
            size,
            volume_type: vtype,
            zone: zone.to_owned(),
            server_id: Some(id.clone()),
        });
        self.ledger
            .open(BillableKind::Volume, &vid, &name, zone, now);
        self.mac_counter += 1;
        let mac = format!(
            "de:00:00:{:02x}:{:02x}:{:02x}",
            (self.mac_counter >> 16) & 0xff,
            (self.mac_counter >> 8) & 0xff,
            self.mac_counter & 0xff
        );
        self.servers.push(InstServer {
            id: id.clone(),
            name: name.clone(),
            project,
            organization: self.config.organization_id.clone(),
            zone: zone.to_owned(),
            commercial_type,
            image_id: image,
            image_label: label,
            arch,
            tags: tags_field(&m, "tags"),
            state: ServerState::Stopped,
            state_detail: "",
            created: now,
            modified: now,
            dynamic_ip_required: m
                .get("dynamic_ip_required")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            routed_ip_enabled: true,
            protected: m.get("protected").and_then(Value::as_bool).unwrap_or(false),
            boot_type: str_field(&m, "boot_type").unwrap_or_else(|| "local".into()),
            volumes: vec![vid],
            nics: Vec::new(),
            user_data: BTreeMap::new(),
            dynamic_ip: None,
            generation: 0,
            mac,
        });
        self.ledger
            .open(BillableKind::InstanceServer, &id, &name, zone, now);
        let idx = self.servers.len() - 1;
        let resp = json_resp(201, json!({"server": self.server_json(idx)}));
        Ok(with_header(
            resp,
            "location",
            &format!("https://api.scaleway.com/instance/v1/zones/{zone}/servers/{id}"),
        ))
    }

    fn list_servers(&mut self, zone: &str, q: &Q) -> Result<Resp, Resp> {
        let (page, per_page) = page_params(q, "per_page", 50)?;
        let tags: Vec<String> = q
            .get("tags")
            .map(|t| t.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let mut idxs: Vec<usize> = (0..self.servers.len())
            .filter(|&i| {
                let s = &self.servers[i];
                s.zone == zone
                    && q.get("name").is_none_or(|n| s.name.contains(n))
                    && tags.iter().all(|t| s.tags.contains(t))
                    && q.get("state").is_none_or(|st| s.state.as_str() == st)
                    && q.get("private_network")
                        .is_none_or(|pn| s.nics.iter().any(|n| n.pn_id == pn))
                    && q.get("commercial_type")
                        .is_none_or(|c| s.commercial_type == c)
                    && q.get("project").is_none_or(|p| s.project == p)
                    && q.get("organization").is_none_or(|o| s.organization == o)
            })
            .collect();
        let asc = q.get("order") == Some("creation_date_asc");
        idxs.sort_by_key(|&i| (self.servers[i].created, i));
        if !asc {
            idxs.reverse();
        }
        let total = idxs.len();
        let items: Vec<Value> = slice_page(idxs, page, per_page)
            .into_iter()
            .map(|i| self.server_json(i))
            .collect();
        let base = format!("/instance/v1/zones/{zone}/servers");
        let last = total.div_ceil(per_page).max(1);
        let mut links = Vec::new();
        if page < last {
            links.push(format!(
                "<{base}?page={}&per_page={per_page}>; rel=\"next\"",
                page + 1
            ));
        }
        if page > 1 {
            links.push(format!(
                "<{base}?page={}&per_page={per_page}>; rel=\"previous\"",
                page - 1
            ));
            links.push(format!(
                "<{base}?page=1&per_page={per_page}>; rel=\"first\""
            ));
        }
        links.push(format!(
            "<{base}?page={last}&per_page={per_page}>; rel=\"last\""
        ));
        let resp = with_header(
            json_resp(200, json!({ "servers": items })),
            "x-total-count",
            &total.to_string(),
        );
        Ok(with_header(resp, "link", &links.join(", ")))
    }

    fn patch_server(&mut self, zone: &str, id: &str, body: &Bytes) -> Result<Resp, Resp> {
        let idx = self.server_idx(zone, id)?;
        let m = body_json(body)?;
        let now = self.now;
        let s = &mut self.servers[idx];
        if let Some(n) = str_field(&m, "name") {
            s.name = n;
        }
        if m.contains_key("tags") {
            s.tags = tags_field(&m, "tags");
        }
        if let Some(b) = m.get("dynamic_ip_required").and_then(Value::as_bool) {
            s.dynamic_ip_required = b;
        }
        if let Some(b) = m.get("protected").and_then(Value::as_bool) {
            s.protected = b;
        }
        s.modified = now;
        Ok(json_resp(200, json!({"server": self.server_json(idx)})))
    }

    fn delete_server(&mut self, zone: &str, id: &str) -> Result<Resp, Resp> {
        let idx = self.server_idx(zone, id)?;
        if self.servers[idx].state != ServerState::Stopped {
            return Err(match self.config.delete_refusal {
                DeleteRefusal::LegacyBadRequest => legacy("instance should be powered off"),
                DeleteRefusal::PreconditionFailed => json_resp(
                    412,
                    json!({"type":"precondition_failed","precondition":"resource_still_in_use","message":"instance should be powered off","help_message":"power off the server first"}),
                ),
            });
        }
        if self.servers[idx].protected {
            return Err(json_resp(
                412,
                json!({"type":"precondition_failed","precondition":"protected_resource","message":"server is protected"}),
            ));
        }
        self.remove_server(idx, false);
        Ok(empty(204))
    }

    fn server_action(&mut self, zone: &str, id: &str, body: &Bytes) -> Result<Resp, Resp> {
        let idx = self.server_idx(zone, id)?;
        let m = body_json(body)?;
        let action = ServerAction::from(str_field(&m, "action").unwrap_or_default().as_str());
        if let ServerAction::Unknown(a) = &action {
            return Err(invalid_argument(
                "action",
                "constraint",
                &format!("unknown action {a:?}"),
            ));
        }
        let allowed = self.servers[idx].allowed_actions();
        if action != ServerAction::EnableRoutedIp && !allowed.contains(&action) {
            let msg = match action {
                ServerAction::Poweron => "server should be stopped",
                _ => "server should be running",
            };
            return Err(legacy(msg));
        }
        let d = self.config.durations.clone();
        let now = self.now;
        // Only actions that change the state supersede a pending transition.
        if !matches!(action, ServerAction::Backup | ServerAction::EnableRoutedIp) {
            self.servers[idx].generation += 1;
        }
        let generation = self.servers[idx].generation;
        let sid = self.servers[idx].id.clone();
        let description = match action {
            ServerAction::Poweron => {
                self.set_inst_state(idx, ServerState::Starting, "allocating node");
                if self.servers[idx].dynamic_ip_required && self.servers[idx].dynamic_ip.is_none() {
                    self.public_counter += 1;
                    let n = self.public_counter;
                    let ip_id = self.new_id();
                    let name = self.servers[idx].name.clone();
                    self.ledger
                        .open(BillableKind::PublicIp, &ip_id, &name, zone, now);
                    let address = format!("163.172.{}.{}", (n / 250) % 250, 2 + n % 250);
                    let s = &self.servers[idx];
                    self.ips.push(IpamIp {
                        id: ip_id.clone(),
                        address: format!("{address}/32"),
                        is_ipv6: false,
                        project: s.project.clone(),
                        region: region_of(zone),
                        subnet_id: String::new(),
                        pn_id: String::new(),
                        vpc_id: String::new(),
                        resource_type: "instance_server",
                        resource_id: s.id.clone(),
                        mac: s.mac.to_ascii_uppercase(),
                        resource_name: s.name.clone(),
                        created: now,
                        zonal: Some(zone.to_owned()),
                    });
                    self.servers[idx].dynamic_ip = Some(DynIp {
                        id: ip_id,
                        address,
                        attached: false,
                    });
                }
                self.schedule(
                    d.poweron,
                    Ev::Inst {
                        id: sid,
                        generation,
                        to: InstTarget::Running,
                    },
                );
                "server_batch_poweron"
            }
            ServerAction::Poweroff => {
                self.set_inst_state(idx, ServerState::Stopping, "stopping");
                self.schedule(
                    d.poweroff,
                    Ev::Inst {
                        id: sid,
                        generation,
                        to: InstTarget::Stopped,
                    },
                );
                "server_poweroff"
            }
            ServerAction::StopInPlace => {
                self.set_inst_state(idx, ServerState::Stopping, "stopping in place");
                self.schedule(
                    d.stop_in_place,
                    Ev::Inst {
                        id: sid,
                        generation,
                        to: InstTarget::StoppedInPlace,
                    },
                );
                "server_stop_in_place"
            }
            ServerAction::Reboot => {
                self.set_inst_state(idx, ServerState::Starting, "rebooting");
                self.schedule(
                    d.reboot,
                    Ev::Inst {
                        id: sid,
                        generation,
                        to: InstTarget::Running,
                    },
                );
                "server_reboot"
            }
            ServerAction::Terminate => {
                self.set_inst_state(idx, ServerState::Stopping, "terminating");
                self.schedule(
                    d.terminate,
                    Ev::Inst {
                        id: sid,
                        generation,
                        to: InstTarget::Gone,
                    },
                );
                "server_terminate"
            }
            ServerAction::Backup => "server_backup",
            _ => {
                self.servers[idx].routed_ip_enabled = true;
                "server_enable_routed_ip"
            }
        };
        let task_id = self.new_id();
        Ok(json_resp(
            202,
            json!({"task":{"id":task_id,"description":description,"status":"pending","href_from":format!("/servers/{id}/action"),
                "href_result":format!("/servers/{id}"),"started_at":self.ts(now),"terminated_at":null,"progress":0,"zone":zone}}),
        ))
    }

    fn create_nic(&mut self, zone: &str, id: &str, body: &Bytes) -> Result<Resp, Resp> {
        let idx = self.server_idx(zone, id)?;
        let m = body_json(body)?;
        let pn_id = str_field(&m, "private_network_id").ok_or_else(|| {
            invalid_argument(
                "private_network_id",
                "required",
                "private_network_id is required",
            )
        })?;
        let region = region_of(zone);
        let pn_idx = self
            .pns
            .iter()
            .position(|p| p.id == pn_id && p.region == region)
            .ok_or_else(|| not_found("private_network", &pn_id))?;
        if self.servers[idx].nics.iter().any(|n| n.pn_id == pn_id) {
            return Err(json_resp(
                409,
                json!({"type":"already_exists","resource":"instance_private_nic","message":"the server is already attached to this private network"}),
            ));
        }
        let nic_id = self.new_id();
        self.mac_counter += 1;
        let c = self.mac_counter;
        let mac = format!(
            "02:00:00:{:02x}:{:02x}:{:02x}",
            (c >> 16) & 0xff,
            ((c >> 8) & 0xff) | 0xa0,
            c & 0xff
        );
        let server_name = self.servers[idx].name.clone();
        let ipam_ids =
            self.allocate_ips(pn_idx, "instance_private_nic", &nic_id, &mac, &server_name);
        let now = self.now;
        self.servers[idx].nics.push(Nic {
            id: nic_id.clone(),
            pn_id,
            mac,
            state: "syncing",
            tags: tags_field(&m, "tags"),
            created: now,
            modified: now,
            ipam_ids,
        });
        let d = self.config.durations.nic_sync;
        self.schedule(
            d,
            Ev::NicReady {
                server: id.to_owned(),
                nic: nic_id,
            },
        );
        let s = &self.servers[idx];
        let n = s
            .nics
            .last()
            .ok_or_else(|| untyped(500, "internal error"))?;
        Ok(json_resp(201, json!({"private_nic": self.nic_json(s, n)})))
    }

    /// Allocates an IPv4 (and an IPv6 when the network has one) in IPAM.
    fn allocate_ips(
        &mut self,
        pn_idx: usize,
        rtype: &'static str,
        rid: &str,
        mac: &str,
        name: &str,
    ) -> Vec<String> {
        let now = self.now;
        let mut out = Vec::new();
        let mut new_ips = Vec::new();
        {
            let pn = &mut self.pns[pn_idx];
            for sn in &mut pn.subnets {
                sn.next += 1;
                let address = match (&sn.v4, &sn.v6_prefix) {
                    (Some((base, len)), _) => {
                        let host = base.saturating_add(1 + sn.next);
                        format!("{}/{len}", Ipv4Addr::from(host))
                    }
                    (None, Some(prefix)) => format!("{prefix}::{:x}/64", sn.next + 1),
                    _ => continue,
                };
                new_ips.push((
                    address,
                    sn.v4.is_none(),
                    sn.id.clone(),
                    pn.id.clone(),
                    pn.vpc_id.clone(),
                    pn.project.clone(),
                    pn.region.clone(),
                ));
            }
        }
        for (address, is_ipv6, subnet_id, pn_id, vpc_id, project, region) in new_ips {
            let id = self.new_id();
            out.push(id.clone());
            self.ips.push(IpamIp {
                id,
                address,
                is_ipv6,
                project,
                region,
                subnet_id,
                pn_id,
                vpc_id,
                resource_type: rtype,
                resource_id: rid.to_owned(),
                mac: mac.to_ascii_uppercase(),
                resource_name: name.to_owned(),
                created: now,
                zonal: None,
            });
        }
        out
    }

    fn delete_volume(&mut self, zone: &str, id: &str) -> Result<Resp, Resp> {
        let v = self
            .volumes
            .iter()
            .find(|v| v.id == id && v.zone == zone)
            .ok_or_else(|| not_found("instance_volume", id))?;
        if v.server_id.is_some() {
            return Err(json_resp(
                412,
                json!({"type":"precondition_failed","precondition":"resource_still_in_use","message":"volume is attached to a server"}),
            ));
        }
        self.volumes.retain(|v| v.id != id);
        let now = self.now;
        self.ledger.close(BillableKind::Volume, id, now);
        Ok(empty(204))
    }

    // ----- VPC -------------------------------------------------------------

    fn default_vpc(region: &str) -> String {
        stable_id(&["vpc", region])
    }

    fn pn_json(&self, p: &Pn) -> Value {
        let subnets: Vec<Value> = p
            .subnets
            .iter()
            .map(|s| json!({"id":s.id,"subnet":s.cidr,"created_at":self.ts(s.created),"updated_at":self.ts(s.created),
                "project_id":p.project,"private_network_id":p.id,"vpc_id":p.vpc_id}))
            .collect();
        json!({"id":p.id,"name":p.name,"organization_id":p.organization,"project_id":p.project,"region":p.region,"tags":p.tags,
            "created_at":self.ts(p.created),"updated_at":self.ts(p.created),"vpc_id":p.vpc_id,"dhcp_enabled":true,"subnets":subnets,
            "default_route_propagation_enabled":false})
    }

    fn route_vpc(
        &mut self,
        m: &str,
        region: &str,
        rest: &[&str],
        q: &Q,
        body: &Bytes,
    ) -> Result<Resp, Resp> {
        match (m, rest) {
            ("GET", ["private-networks"]) => {
                let (page, size) = page_params(q, "page_size", 50)?;
                let tags = q.all("tags");
                let mut items: Vec<&Pn> = self
                    .pns
                    .iter()
                    .filter(|p| p.region == region)
                    .filter(|p| q.get("name").is_none_or(|n| p.name.contains(n)))
                    .filter(|p| q.get("project_id").is_none_or(|x| p.project == x))
                    .filter(|p| q.get("vpc_id").is_none_or(|x| p.vpc_id == x))
                    .filter(|p| tags.iter().all(|t| p.tags.contains(t)))
                    .collect();
                if q.get("order_by") == Some("created_at_desc") {
                    items.reverse();
                }
                let total = items.len();
                let items: Vec<Value> = slice_page(items, page, size)
                    .into_iter()
                    .map(|p| self.pn_json(p))
                    .collect();
                Ok(json_resp(
                    200,
                    json!({"private_networks":items,"total_count":total}),
                ))
            }
            ("POST", ["private-networks"]) => {
                let mb = body_json(body)?;
                let id = self.new_id();
                let project =
                    str_field(&mb, "project_id").unwrap_or_else(|| self.config.project_id.clone());
                let name = str_field(&mb, "name").unwrap_or_else(|| format!("pn-{}", &id[..8]));
                let vpc_id = str_field(&mb, "vpc_id").unwrap_or_else(|| Self::default_vpc(region));
                let now = self.now;
                let mut subnets = Vec::new();
                self.subnet_counter += 1;
                let k = self.subnet_counter;
                match mb.get("subnets").and_then(Value::as_array) {
                    Some(list) if !list.is_empty() => {
                        for s in list {
                            let cidr = s.as_str().unwrap_or_default();
                            let Some((base, len)) = parse_cidr(cidr) else {
                                return Err(invalid_argument(
                                    "subnets",
                                    "format",
                                    "subnets must be IPv4 CIDRs between /8 and /29",
                                ));
                            };
                            subnets.push(SimSubnet {
                                id: stable_id(&["subnet", &id, cidr]),
                                cidr: format!("{}/{len}", Ipv4Addr::from(base)),
                                created: now,
                                v4: Some((base, len)),
                                v6_prefix: None,
                                next: 0,
                            });
                        }
                    }
                    _ => {
                        let base =
                            u32::from(Ipv4Addr::new(172, 16, 0, 0)) + (((k * 4) % 1024) << 8);
                        subnets.push(SimSubnet {
                            id: stable_id(&["subnet4", &id]),
                            cidr: format!("{}/22", Ipv4Addr::from(base)),
                            created: now,
                            v4: Some((base, 22)),
                            v6_prefix: None,
                            next: 0,
                        });
                    }
                }
                let prefix = format!("fd5f:519c:6d46:{:x}", 0x2700 + k);
                subnets.push(SimSubnet {
                    id: stable_id(&["subnet6", &id]),
                    cidr: format!("{prefix}::/64"),
                    created: now,
                    v4: None,
                    v6_prefix: Some(prefix),
                    next: 0,
                });
                self.pns.push(Pn {
                    id: id.clone(),
                    name: name.clone(),
                    project,
                    organization: self.config.organization_id.clone(),
                    region: region.to_owned(),
                    tags: tags_field(&mb, "tags"),
                    vpc_id,
                    created: now,
                    subnets,
                });
                self.ledger
                    .open(BillableKind::PrivateNetwork, &id, &name, region, now);
                let p = self
                    .pns
                    .last()
                    .ok_or_else(|| untyped(500, "internal error"))?;
                Ok(json_resp(200, self.pn_json(p)))
            }
            ("GET", ["private-networks", id]) => {
                let p = self
                    .pns
                    .iter()
                    .find(|p| p.id == *id && p.region == region)
                    .ok_or_else(|| not_found("private_network", id))?;
                Ok(json_resp(200, self.pn_json(p)))
            }
            ("DELETE", ["private-networks", id]) => {
                if !self.pns.iter().any(|p| p.id == *id && p.region == region) {
                    return Err(not_found("private_network", id));
                }
                let in_use = self
                    .servers
                    .iter()
                    .any(|s| s.nics.iter().any(|n| n.pn_id == *id))
                    || self.spns.iter().any(|s| s.pn_id == *id);
                if in_use {
                    return Err(json_resp(
                        412,
                        json!({"type":"precondition_failed","precondition":"resource_still_in_use","message":"Private Network must be empty to be deleted","help_message":"Private Network must be empty to be deleted"}),
                    ));
                }
                self.pns.retain(|p| p.id != *id);
                let now = self.now;
                self.ledger.close(BillableKind::PrivateNetwork, id, now);
                Ok(empty(204))
            }
            _ => Err(untyped(404, "Not Found")),
        }
    }

    // ----- IPAM ------------------------------------------------------------

    fn list_ips(&mut self, region: &str, q: &Q) -> Result<Resp, Resp> {
        let (page, size) = page_params(q, "page_size", 50)?;
        let sources: Vec<&str> = [
            "zonal",
            "regional",
            "private_network_id",
            "subnet_id",
            "source_vpc_id",
        ]
        .into_iter()
        .filter(|k| q.get(k).is_some())
        .collect();
        if sources.len() > 1 && self.config.strict_ipam_source_filter {
            return Err(invalid_argument(
                "source",
                "constraint",
                &format!(
                    "at most one source filter may be set, got {}",
                    sources.join(", ")
                ),
            ));
        }
        let regional = q.bool("regional")?;
        let attached = q.bool("attached")?;
        let is_ipv6 = q.bool("is_ipv6")?;
        let rtype = q.get("resource_type").filter(|t| *t != "unknown_type");
        let rtypes = q.all("resource_types");
        let rids = q.all("resource_ids");
        let ip_ids = q.all("ip_ids");
        let tags = q.all("tags");
        let items: Vec<&IpamIp> = self
            .ips
            .iter()
            .filter(|ip| ip.region == region)
            .filter(|ip| {
                q.get("zonal")
                    .is_none_or(|z| ip.zonal.as_deref() == Some(z))
            })
            .filter(|_| regional != Some(true))
            .filter(|ip| q.get("private_network_id").is_none_or(|x| ip.pn_id == x))
            .filter(|ip| q.get("subnet_id").is_none_or(|x| ip.subnet_id == x))
            .filter(|ip| q.get("source_vpc_id").is_none_or(|x| ip.vpc_id == x))
            .filter(|ip| q.get("vpc_id").is_none_or(|x| ip.vpc_id == x))
            .filter(|ip| q.get("project_id").is_none_or(|x| ip.project == x))
            .filter(|ip| is_ipv6.is_none_or(|b| ip.is_ipv6 == b))
            .filter(|ip| attached.is_none_or(|b| b != ip.resource_id.is_empty()))
            .filter(|ip| {
                q.get("resource_name")
                    .is_none_or(|x| ip.resource_name.contains(x))
            })
            .filter(|ip| q.get("resource_id").is_none_or(|x| ip.resource_id == x))
            .filter(|ip| rids.is_empty() || rids.contains(&ip.resource_id))
            .filter(|ip| rtype.is_none_or(|t| ip.resource_type == t))
            .filter(|ip| {
                rtypes.iter().all(|t| t == "unknown_type")
                    || rtypes.iter().any(|t| t == ip.resource_type)
            })
            .filter(|ip| {
                q.get("mac_address")
                    .is_none_or(|x| ip.mac.eq_ignore_ascii_case(x))
            })
            .filter(|ip| ip_ids.is_empty() || ip_ids.contains(&ip.id))
            .filter(|_| tags.is_empty())
            .collect();
        let total = items.len();
        let items: Vec<Value> = slice_page(items, page, size)
            .into_iter()
            .map(|ip| {
                json!({"id":ip.id,"address":ip.address,"project_id":ip.project,"is_ipv6":ip.is_ipv6,
                    "created_at":self.ts(ip.created),"updated_at":self.ts(ip.created),
                    "source": match &ip.zonal { Some(z) => json!({"zonal": z}), None => json!({"subnet_id": ip.subnet_id}) },
                    "resource":{"type":ip.resource_type,"id":ip.resource_id,"mac_address":ip.mac,"name":ip.resource_name},
                    "tags":[],"reverses":[],"region":ip.region,"zone":ip.zonal})
            })
            .collect();
        Ok(json_resp(200, json!({"total_count":total,"ips":items})))
    }

    // ----- Elastic Metal ---------------------------------------------------

    fn option_id(zone: &str, name: &str) -> String {
        stable_id(&["em-option", zone, name])
    }

    fn options_json(zone: &str) -> Vec<Value> {
        vec![
            json!({"id":Self::option_id(zone, PN_OPTION),"name":PN_OPTION,"manageable":true,"private_network":{"bandwidth_in_bps":1_000_000_000u64}}),
            json!({"id":Self::option_id(zone, "Remote Access"),"name":"Remote Access","manageable":true,"remote_access":{}}),
        ]
    }

    fn offers(zone: &str) -> Vec<(String, &'static str, &'static str, bool)> {
        EM_OFFERS
            .iter()
            .map(|(n, stock, ci)| (stable_id(&["em-offer", zone, n]), *n, *stock, *ci))
            .collect()
    }

    fn offer_json(zone: &str, id: &str, name: &str, stock: &str) -> Value {
        let options: Vec<Value> = Self::options_json(zone)
            .into_iter()
            .map(|mut o| {
                if let Some(obj) = o.as_object_mut() {
                    obj.insert("enabled".into(), Value::Bool(false));
                }
                o
            })
            .collect();
        json!({"id":id,"name":name,"stock":stock,"enable":true,"subscription_period":"hourly",
            "price_per_hour":{"currency_code":"EUR","units":0,"nanos":300_000_000},"price_per_month":null,
            "bandwidth":1_000_000_000u64,"private_bandwidth":1_000_000_000u64,"commercial_range":"general",
            "cpus":[{"name":"AMD EPYC","core_count":8,"thread_count":16,"frequency":3000}],
            "memories":[{"capacity":64_000_000_000u64,"type":"DDR5"}],
            "disks":[{"capacity":1_920_000_000_000u64,"type":"NVMe"}],"options":options,"zone":zone,
            "quota_name":"baremetal_servers","fee":null,"tags":[]})
    }

    fn os_list(zone: &str) -> Vec<(String, &'static str, &'static str)> {
        EM_OS
            .iter()
            .map(|(n, v)| (stable_id(&["em-os", zone, n, v]), *n, *v))
            .collect()
    }

    fn em_json(&self, s: &EmServer) -> Value {
        let ips: Vec<Value> = s
            .ips
            .iter()
            .map(|(id, a, v)| json!({"id":id,"address":a,"reverse":"","version":v,"reverse_status":"active"}))
            .collect();
        let options: Vec<Value> = s
            .options
            .iter()
            .map(|o| {
                let mut v = json!({"id":o.id,"name":o.name,"status":o.status,"manageable":true,"expires_at":null});
                if o.pn
                    && let Some(obj) = v.as_object_mut()
                {
                    obj.insert("private_network".into(), json!({"bandwidth_in_bps":1_000_000_000u64}));
                }
                v
            })
            .collect();
        let install = s.install.as_ref().map(|i| {
            json!({"os_id":i.os_id,"hostname":i.hostname,"ssh_key_ids":i.ssh_key_ids,"status":i.status,"user":"ubuntu","partitioning_schema":null})
        });
        json!({"id":s.id,"organization_id":s.organization,"project_id":s.project,"name":s.name,"description":s.description,
            "updated_at":self.ts(s.updated),"created_at":self.ts(s.created),"status":s.status,"offer_id":s.offer_id,
            "offer_name":s.offer_name,"tags":s.tags,"ips":ips,"domain":format!("{}.fr.baremetal.scw.cloud", s.id),
            "boot_type":"normal","zone":s.zone,"install":install,"ping_status":if s.status == "ready" {"ping_status_up"} else {"ping_status_unknown"},
            "options":options,"rescue_server":null,"protected":false})
    }

    fn em_idx(&self, zone: &str, id: &str) -> Result<usize, Resp> {
        self.em_servers
            .iter()
            .position(|s| s.id == id && s.zone == zone)
            .ok_or_else(|| untyped(404, "Not Found"))
    }

    fn spn_json(&self, s: &Spn) -> Value {
        json!({"id":s.id,"project_id":s.project,"server_id":s.server_id,"private_network_id":s.pn_id,"vlan":s.vlan,
            "status":s.status,"created_at":self.ts(s.created),"updated_at":self.ts(s.updated),"zone":s.zone})
    }

    fn route_em(
        &mut self,
        m: &str,
        zone: &str,
        rest: &[&str],
        q: &Q,
        body: &Bytes,
    ) -> Result<Resp, Resp> {
        match (m, rest) {
            ("GET", ["offers"]) => {
                let (page, size) = page_params(q, "page_size", 50)?;
                let items: Vec<_> = Self::offers(zone)
                    .into_iter()
                    .filter(|(_, n, _, _)| q.get("name").is_none_or(|x| n.contains(x)))
                    .collect();
                let total = items.len();
                let items: Vec<Value> = slice_page(items, page, size)
                    .into_iter()
                    .map(|(id, n, st, _)| Self::offer_json(zone, &id, n, st))
                    .collect();
                Ok(json_resp(200, json!({"total_count":total,"offers":items})))
            }
            ("GET", ["offers", id]) => {
                let (id, n, st, _) = Self::offers(zone)
                    .into_iter()
                    .find(|(oid, ..)| oid == id)
                    .ok_or_else(|| untyped(404, "Not Found"))?;
                Ok(json_resp(200, Self::offer_json(zone, &id, n, st)))
            }
            ("GET", ["options"]) => {
                let (page, size) = page_params(q, "page_size", 50)?;
                if let Some(o) = q.get("offer_id")
                    && !Self::offers(zone).iter().any(|(id, ..)| id == o)
                {
                    return Err(untyped(404, "Not Found"));
                }
                let items: Vec<Value> = Self::options_json(zone)
                    .into_iter()
                    .filter(|o| {
                        q.get("name")
                            .is_none_or(|n| o["name"].as_str().is_some_and(|on| on.contains(n)))
                    })
                    .collect();
                let total = items.len();
                Ok(json_resp(
                    200,
                    json!({"total_count":total,"options":slice_page(items, page, size)}),
                ))
            }
            ("GET", ["os"]) => {
                let (page, size) = page_params(q, "page_size", 50)?;
                let items: Vec<Value> = Self::os_list(zone)
                    .into_iter()
                    .map(|(id, n, v)| {
                        json!({"id":id,"name":n,"version":v,"logo_url":"","ssh":{"editable":true,"required":true},
                            "user":{"editable":false,"required":false,"default_value":n.to_ascii_lowercase()},
                            "password":{"editable":false,"required":false},"enabled":true,"cloud_init_supported":true,
                            "allowed":true,"license_required":false,"custom_partitioning_supported":true,"zone":zone})
                    })
                    .collect();
                let total = items.len();
                Ok(json_resp(
                    200,
                    json!({"total_count":total,"os":slice_page(items, page, size)}),
                ))
            }
            ("POST", ["servers"]) => self.em_order(zone, body),
            ("GET", ["servers"]) => {
                let (page, size) = page_params(q, "page_size", 50)?;
                let tags = q.all("tags");
                let items: Vec<&EmServer> = self
                    .em_servers
                    .iter()
                    .filter(|s| s.zone == zone)
                    .filter(|s| q.get("name").is_none_or(|n| s.name.contains(n)))
                    .filter(|s| q.get("status").is_none_or(|x| s.status == x))
                    .filter(|s| q.get("project_id").is_none_or(|x| s.project == x))
                    .filter(|s| tags.iter().all(|t| s.tags.contains(t)))
                    .collect();
                let total = items.len();
                let items: Vec<Value> = slice_page(items, page, size)
                    .into_iter()
                    .map(|s| self.em_json(s))
                    .collect();
                Ok(json_resp(200, json!({"total_count":total,"servers":items})))
            }
            ("GET", ["servers", id]) => {
                let idx = self.em_idx(zone, id)?;
                Ok(json_resp(200, self.em_json(&self.em_servers[idx])))
            }
            ("PATCH", ["servers", id]) => {
                let idx = self.em_idx(zone, id)?;
                let mb = body_json(body)?;
                let now = self.now;
                let s = &mut self.em_servers[idx];
                if let Some(n) = str_field(&mb, "name") {
                    s.name = n;
                }
                if let Some(d) = mb.get("description").and_then(Value::as_str) {
                    s.description = d.to_owned();
                }
                if mb.contains_key("tags") {
                    s.tags = tags_field(&mb, "tags");
                }
                s.updated = now;
                Ok(json_resp(200, self.em_json(&self.em_servers[idx])))
            }
            ("DELETE", ["servers", id]) => {
                let idx = self.em_idx(zone, id)?;
                if self.em_servers[idx].status == "deleting" {
                    return Err(untyped(400, "Server is being deleted"));
                }
                if self.spns.iter().any(|s| s.server_id == *id) {
                    return Err(untyped(
                        400,
                        "Server is attached to private networks: detach them first",
                    ));
                }
                let now = self.now;
                self.em_servers[idx].status = "deleting";
                self.em_servers[idx].updated = now;
                self.em_servers[idx].generation += 1;
                self.ledger.close(BillableKind::ElasticMetalServer, id, now);
                let d = self.config.durations.em_delete;
                self.schedule(
                    d,
                    Ev::EmGone {
                        id: (*id).to_owned(),
                    },
                );
                Ok(json_resp(200, self.em_json(&self.em_servers[idx])))
            }
            ("POST", ["servers", id, "install"]) => {
                let idx = self.em_idx(zone, id)?;
                self.require_delivered(idx)?;
                let mb = body_json(body)?;
                let os_id =
                    str_field(&mb, "os_id").ok_or_else(|| untyped(400, "os_id is required"))?;
                if !Self::os_list(zone).iter().any(|(oid, ..)| *oid == os_id) {
                    return Err(untyped(404, "Not Found"));
                }
                let hostname = str_field(&mb, "hostname")
                    .ok_or_else(|| untyped(400, "hostname is required"))?;
                let now = self.now;
                let s = &mut self.em_servers[idx];
                s.install = Some(EmInstall {
                    os_id,
                    hostname,
                    ssh_key_ids: tags_field(&mb, "ssh_key_ids"),
                    status: "installing",
                });
                s.updated = now;
                let d = self.config.durations.em_install;
                self.schedule(
                    d,
                    Ev::EmInstalled {
                        id: (*id).to_owned(),
                    },
                );
                Ok(json_resp(200, self.em_json(&self.em_servers[idx])))
            }
            ("POST", ["servers", id, verb @ ("start" | "stop" | "reboot")]) => {
                let idx = self.em_idx(zone, id)?;
                self.require_delivered(idx)?;
                let cur = self.em_servers[idx].status;
                let (during, after) = match (*verb, cur) {
                    ("start", "stopped") => ("starting", "ready"),
                    ("stop", "ready") => ("stopping", "stopped"),
                    ("reboot", "ready") => ("stopping", "ready"),
                    _ => return Err(untyped(400, &format!("Server cannot {verb} while {cur}"))),
                };
                let now = self.now;
                let s = &mut self.em_servers[idx];
                s.status = during;
                s.updated = now;
                s.generation += 1;
                let generation = s.generation;
                let d = self.config.durations.em_power;
                self.schedule(
                    d,
                    Ev::EmPower {
                        id: (*id).to_owned(),
                        generation,
                        status: after,
                    },
                );
                Ok(json_resp(200, self.em_json(&self.em_servers[idx])))
            }
            ("POST", ["servers", id, "options", option]) => {
                let idx = self.em_idx(zone, id)?;
                self.require_delivered(idx)?;
                let (name, pn) = if *option == Self::option_id(zone, PN_OPTION) {
                    (PN_OPTION, true)
                } else if *option == Self::option_id(zone, "Remote Access") {
                    ("Remote Access", false)
                } else {
                    return Err(untyped(404, "Not Found"));
                };
                if self.em_servers[idx].options.iter().any(|o| o.id == *option) {
                    return Err(untyped(400, "Option is already enabled on this server"));
                }
                self.em_servers[idx].options.push(EmOption {
                    id: (*option).to_owned(),
                    name: name.to_owned(),
                    status: "option_status_enabling",
                    pn,
                });
                let d = self.config.durations.em_option;
                self.schedule(
                    d,
                    Ev::EmOption {
                        id: (*id).to_owned(),
                        option: (*option).to_owned(),
                    },
                );
                Ok(json_resp(200, self.em_json(&self.em_servers[idx])))
            }
            ("DELETE", ["servers", id, "options", option]) => {
                let idx = self.em_idx(zone, id)?;
                let o = self.em_servers[idx]
                    .options
                    .iter_mut()
                    .find(|o| o.id == *option)
                    .ok_or_else(|| untyped(404, "Not Found"))?;
                if o.pn && self.spns.iter().any(|s| s.server_id == *id) {
                    return Err(untyped(
                        400,
                        "Private networks are still attached to this server",
                    ));
                }
                o.status = "option_status_disabling";
                let d = self.config.durations.em_option;
                self.schedule(
                    d,
                    Ev::EmOption {
                        id: (*id).to_owned(),
                        option: (*option).to_owned(),
                    },
                );
                Ok(json_resp(200, self.em_json(&self.em_servers[idx])))
            }
            ("POST", ["servers", id, "private-networks"]) => {
                let idx = self.em_idx(zone, id)?;
                let mb = body_json(body)?;
                let pn = str_field(&mb, "private_network_id")
                    .ok_or_else(|| untyped(400, "private_network_id is required"))?;
                let spn = self.em_attach(zone, idx, &pn)?;
                Ok(json_resp(200, spn))
            }
            ("PUT", ["servers", id, "private-networks"]) => {
                let idx = self.em_idx(zone, id)?;
                let mb = body_json(body)?;
                let wanted = tags_field(&mb, "private_network_ids");
                let current: Vec<String> = self
                    .spns
                    .iter()
                    .filter(|s| s.server_id == *id)
                    .map(|s| s.pn_id.clone())
                    .collect();
                for pn in &wanted {
                    if !current.contains(pn) {
                        self.em_attach(zone, idx, pn)?;
                    }
                }
                for pn in current.iter().filter(|p| !wanted.contains(p)) {
                    self.em_detach(id, pn)?;
                }
                let items: Vec<Value> = self
                    .spns
                    .iter()
                    .filter(|s| s.server_id == *id)
                    .map(|s| self.spn_json(s))
                    .collect();
                let total = items.len();
                Ok(json_resp(
                    200,
                    json!({"server_private_networks":items,"total_count":total}),
                ))
            }
            ("DELETE", ["servers", id, "private-networks", pn]) => {
                self.em_idx(zone, id)?;
                self.em_detach(id, pn)?;
                Ok(empty(204))
            }
            ("GET", ["server-private-networks"]) => {
                let (page, size) = page_params(q, "page_size", 50)?;
                let items: Vec<&Spn> = self
                    .spns
                    .iter()
                    .filter(|s| s.zone == zone)
                    .filter(|s| q.get("server_id").is_none_or(|x| s.server_id == x))
                    .filter(|s| q.get("private_network_id").is_none_or(|x| s.pn_id == x))
                    .filter(|s| q.get("project_id").is_none_or(|x| s.project == x))
                    .collect();
                let total = items.len();
                let items: Vec<Value> = slice_page(items, page, size)
                    .into_iter()
                    .map(|s| self.spn_json(s))
                    .collect();
                Ok(json_resp(
                    200,
                    json!({"server_private_networks":items,"total_count":total}),
                ))
            }
            _ => Err(untyped(404, "Not Found")),
        }
    }

    fn require_delivered(&self, idx: usize) -> Result<(), Resp> {
        match self.em_servers[idx].status {
            "delivering" | "ordered" => Err(untyped(400, "Server is not delivered")),
            "deleting" => Err(untyped(400, "Server is being deleted")),
            _ => Ok(()),
        }
    }

    fn em_attach(&mut self, zone: &str, idx: usize, pn_id: &str) -> Result<Value, Resp> {
        self.require_delivered(idx)?;
        let pn_enabled = self.em_servers[idx]
            .options
            .iter()
            .any(|o| o.pn && o.status == "option_status_enable");
        if !pn_enabled {
            return Err(untyped(
                400,
                "Private Network option is not enabled on this server",
            ));
        }
        let region = region_of(zone);
        let pn_idx = self
            .pns
            .iter()
            .position(|p| p.id == pn_id && p.region == region)
            .ok_or_else(|| not_found("private_network", pn_id))?;
        let sid = self.em_servers[idx].id.clone();
        if self
            .spns
            .iter()
            .any(|s| s.server_id == sid && s.pn_id == pn_id)
        {
            return Err(untyped(
                400,
                "Private Network is already attached to this server",
            ));
        }
        self.vlan_counter += 1;
        let vlan = 1000 + (self.vlan_counter % 3000);
        let id = self.new_id();
        let now = self.now;
        let mac = format!(
            "02:00:01:{:02x}:{:02x}:{:02x}",
            (vlan >> 8) & 0xff,
            vlan & 0xff,
            idx & 0xff
        );
        let name = self.em_servers[idx].name.clone();
        self.allocate_ips(pn_idx, "baremetal_private_nic", &id, &mac, &name);
        self.spns.push(Spn {
            id: id.clone(),
            server_id: sid,
            pn_id: pn_id.to_owned(),
            project: self.em_servers[idx].project.clone(),
            zone: zone.to_owned(),
            vlan,
            status: "attaching",
            created: now,
            updated: now,
        });
        let d = self.config.durations.em_pn;
        self.schedule(d, Ev::SpnAttached { id });
        let s = self
            .spns
            .last()
            .ok_or_else(|| untyped(500, "internal error"))?;
        Ok(self.spn_json(s))
    }

    fn em_detach(&mut self, server: &str, pn: &str) -> Result<(), Resp> {
        let now = self.now;
        let s = self
            .spns
            .iter_mut()
            .find(|s| s.server_id == server && s.pn_id == pn)
            .ok_or_else(|| untyped(404, "Not Found"))?;
        if s.status != "detaching" {
            s.status = "detaching";
            s.updated = now;
            let id = s.id.clone();
            let d = self.config.durations.em_pn;
            self.schedule(d, Ev::SpnGone { id });
        }
        Ok(())
    }

    fn em_order(&mut self, zone: &str, body: &Bytes) -> Result<Resp, Resp> {
        let mb = body_json(body)?;
        let offer_id =
            str_field(&mb, "offer_id").ok_or_else(|| untyped(400, "offer_id is required"))?;
        let (oid, oname, stock, cloud_init) = Self::offers(zone)
            .into_iter()
            .find(|(id, ..)| *id == offer_id)
            .ok_or_else(|| untyped(404, "Not Found"))?;
        if stock == "empty" {
            return Err(json_resp(
                503,
                json!({"type":"out_of_stock","resource":"baremetal_offer","message":"offer is out of stock"}),
            ));
        }
        if mb.get("user_data").is_some_and(|v| !v.is_null()) && !cloud_init {
            return Err(untyped(503, "cloud-init is not supported on this offer"));
        }
        let name = str_field(&mb, "name").ok_or_else(|| untyped(400, "name is required"))?;
        let install = match mb.get("install").filter(|v| v.is_object()) {
            Some(i) => {
                let os_id = i
                    .get("os_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if !Self::os_list(zone).iter().any(|(id, ..)| *id == os_id) {
                    return Err(untyped(404, "Not Found"));
                }
                Some(EmInstall {
                    os_id,
                    hostname: i
                        .get("hostname")
                        .and_then(Value::as_str)
                        .unwrap_or(&name)
                        .to_owned(),
                    ssh_key_ids: i
                        .get("ssh_key_ids")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default(),
                    status: "to_install",
                })
            }
            None => None,
        };
        let mut options = Vec::new();
        for o in tags_field(&mb, "option_ids") {
            if o == Self::option_id(zone, PN_OPTION) {
                options.push(EmOption {
                    id: o,
                    name: PN_OPTION.into(),
                    status: "option_status_enabling",
                    pn: true,
                });
            } else if o == Self::option_id(zone, "Remote Access") {
                options.push(EmOption {
                    id: o,
                    name: "Remote Access".into(),
                    status: "option_status_enabling",
                    pn: false,
                });
            } else {
                return Err(untyped(404, "Not Found"));
            }
        }
        let id = self.new_id();
        let now = self.now;
        self.em_servers.push(EmServer {
            id: id.clone(),
            name: name.clone(),
            description: mb
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            project: str_field(&mb, "project_id").unwrap_or_else(|| self.config.project_id.clone()),
            organization: self.config.organization_id.clone(),
            zone: zone.to_owned(),
            offer_id: oid,
            offer_name: oname.to_owned(),
            tags: tags_field(&mb, "tags"),
            status: "delivering",
            install,
            options,
            ips: Vec::new(),
            created: now,
            updated: now,
            generation: 0,
        });
        self.ledger
            .open(BillableKind::ElasticMetalServer, &id, &name, zone, now);
        let d = self.config.durations.em_delivery;
        self.schedule(d, Ev::EmDelivered { id });
        let s = self
            .em_servers
            .last()
            .ok_or_else(|| untyped(500, "internal error"))?;
        Ok(json_resp(200, self.em_json(s)))
    }
}
