//! An emulator of the Scaleway API endpoints the `scaleway` connector uses:
//! Instance v1 (servers, actions, user data, products and availability,
//! images, security groups and rules, IPs, attach/detach volume), Block
//! Storage (`v1alpha1` and `v1`, same shapes), marketplace v2 and the product
//! catalogue (`v2alpha1`). No third-party emulator exists; this one is
//! checked against the official Python SDK and its recorded real exchanges
//! (`engine/emulator/tests/sdk.rs`).
//!
//! Every request but the public catalogue ones (marketplace, product
//! catalogue) needs `X-Auth-Token` equal to [`Config::secret_key`]. The
//! test controls live under `/__emulator/`:
//! - `POST /__emulator/stock` `{"zone", "commercial_type", "stock": "available"|"scarce"|"shortage"}`
//! - `POST /__emulator/ip-map` `{"public_ip", "address": "127.0.0.1:2222"}` (`"*"` maps every IP)
//! - `GET /__emulator/ip-map/{ip}` -> `{"public_ip", "address"}` or 404
//! - `POST /__emulator/ip-pool` `{"pool": "127.0.0.10-127.0.0.13"}` (or `"127.0.0.10/4"`, `null`
//!   for the default range): public IPv4 addresses come from there, so that each server is
//!   reachable at its own (loopback) address, see [`state::IpPool`]
//! - `GET /__emulator/state` -> [`Server::snapshot`]
//! - `POST /__emulator/reset`
//!
//! See [`state`] for the state machines and [`catalog`] for what the
//! catalogue holds and where it comes from.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use engine_emulator::scaleway::{self, Config, Stock};
//! let server = scaleway::start("127.0.0.1:0".parse().unwrap(), Config { time_scale: 0.0, ..Config::default() }).await?;
//! server.set_stock("fr-par-2", "L4-1-24G", Stock::Shortage);
//! // point the connector at server.base_url ...
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod catalog;
pub mod error;
pub mod public;
pub mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde_json::{json, Value};

use crate::http::{HttpServer, Req, Resp};
use error::ApiError;
pub use state::IpPool;
use state::{ListFilters, Page, Reply, State};

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Multiplies every transition's duration: 1.0 = real-ish (boot 30 s),
    /// 0.0 = instant (the next request sees the end state).
    pub time_scale: f64,
    /// The project (and organization) resources belong to when a request
    /// names none.
    pub project_id: String,
    /// The only `X-Auth-Token` accepted.
    pub secret_key: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            time_scale: 1.0,
            project_id: "11111111-1111-1111-1111-111111111111".to_owned(),
            secret_key: "22222222-2222-2222-2222-222222222222".to_owned(),
        }
    }
}

/// Stock of a commercial type in a zone, as `products/servers/availability` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stock {
    /// `available`.
    Available,
    /// `scarce`: still creatable.
    Scarce,
    /// `shortage`: creates and poweron answer 412 `out_of_stock`.
    Shortage,
}

impl Stock {
    /// The API's word for it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Scarce => "scarce",
            Self::Shortage => "shortage",
        }
    }

    /// Parses the API's word.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "available" => Some(Self::Available),
            "scarce" => Some(Self::Scarce),
            "shortage" => Some(Self::Shortage),
            _ => None,
        }
    }
}

struct Shared {
    config: Config,
    started: Instant,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.advance(self.started.elapsed());
        state
    }
}

/// A running emulator; dropping it stops it too.
pub struct Server {
    /// `http://127.0.0.1:PORT`, what the connector's API URL points at.
    pub base_url: String,
    shared: Arc<Shared>,
    http: HttpServer,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Starts the emulator on `addr` (port 0 picks a free one) on the current
/// tokio runtime.
///
/// # Errors
/// The bind error.
pub async fn start(addr: SocketAddr, config: Config) -> std::io::Result<Server> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::new(&config.project_id, config.time_scale)),
        config,
        started: Instant::now(),
    });
    let handler_shared = Arc::clone(&shared);
    let http = HttpServer::start(addr, Arc::new(move |req| handle(&handler_shared, &req))).await?;
    let base_url = format!("http://{}", http.addr());
    tracing::debug!(%base_url, "Scaleway emulator started.");
    Ok(Server {
        base_url,
        shared,
        http,
    })
}

impl Server {
    /// Sets what `products/servers/availability` says for a type in a zone;
    /// `Shortage` makes creates and poweron fail with `out_of_stock`.
    pub fn set_stock(&self, zone: &str, commercial_type: &str, stock: Stock) {
        self.shared.state().set_stock(zone, commercial_type, stock);
    }

    /// Records which address a server's public IP stands for (tests reach a
    /// real sshd there); `"*"` maps every IP not mapped on its own.
    pub fn map_public_ip(&self, public_ip: &str, reach_at: SocketAddr) {
        self.shared.state().map_public_ip(public_ip, reach_at);
    }

    /// Public IPv4 addresses (of servers and flexible IPs) come from `pool`
    /// from now on, the lowest free one first (`None`: the default range).
    /// Kept across [`reset`](Server::reset).
    pub fn set_public_ip_pool(&self, pool: Option<IpPool>) {
        self.shared.state().set_ip_pool(pool);
    }

    /// Where `public_ip` is reachable, if mapped.
    #[must_use]
    pub fn public_ip_address(&self, public_ip: &str) -> Option<SocketAddr> {
        self.shared.state().ip_mapping(public_ip)
    }

    /// Every server, SBS volume (`volumes`), local volume, IP and security
    /// group (with its rules), plus stock settings and IP mappings.
    #[must_use]
    pub fn snapshot(&self) -> Value {
        self.shared.state().snapshot()
    }

    /// Forgets every resource, stock setting and IP mapping.
    pub fn reset(&self) {
        self.shared.state().reset();
    }

    /// The bound address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// Stops serving and waits until the port is closed.
    pub async fn shutdown(self) {
        self.http.shutdown().await;
    }
}

fn reply_to_resp(reply: Reply) -> Resp {
    let mut resp = match reply.body {
        Some(body) => Resp::json(reply.status, &body),
        None => Resp::empty(reply.status),
    };
    if let Some(total) = reply.total {
        resp = resp.with_header("x-total-count", total.to_string());
    }
    resp
}

fn page(req: &Req, size_key: &str) -> Page {
    let num = |k: &str| {
        req.param(k)
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
    };
    Page {
        page: num("page").unwrap_or(1),
        per_page: num(size_key).unwrap_or(50),
    }
}

fn filters(req: &Req) -> ListFilters {
    let s = |k: &str| req.param(k).map(str::to_owned);
    ListFilters {
        project: s("project").or_else(|| s("project_id")),
        organization: s("organization").or_else(|| s("organization_id")),
        name: s("name"),
        tags: req.params("tags"),
        commercial_type: s("commercial_type"),
        state: s("state"),
        ids: req.params("servers"),
        order_ascending: req.param("order").is_some_and(|o| o.ends_with("_asc")),
        ip_type: s("type"),
        project_default: req.param("project_default").map(|v| v == "true"),
        product_resource_id: s("product_resource_id"),
    }
}

fn handle(shared: &Shared, req: &Req) -> Resp {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let result = match segs.as_slice() {
        ["__emulator", rest @ ..] => return control(shared, req, rest),
        ["marketplace", "v2", rest @ ..] => marketplace(shared, req, rest),
        ["product-catalog", "v2alpha1", "public-catalog", "products"] if req.method == "GET" => {
            let zone = req.param("zone");
            Ok(
                public::catalog_products(
                    &req.params("product_types"),
                    zone,
                    page(req, "page_size"),
                )
                .into(),
            )
        }
        ["instance", "v1", "zones", zone, rest @ ..] => {
            authed(shared, req, zone).and_then(|()| instance(shared, req, zone, rest))
        }
        ["block", "v1alpha1" | "v1", "zones", zone, rest @ ..] => {
            authed(shared, req, zone).and_then(|()| block(shared, req, zone, rest))
        }
        _ => Err(ApiError::NoRoute(req.path.clone())),
    };
    match result {
        Ok(Outcome::Reply(reply)) => reply_to_resp(reply),
        Ok(Outcome::Raw(resp)) => resp,
        Err(e) => e.response(),
    }
}

enum Outcome {
    Reply(Reply),
    Raw(Resp),
}

impl From<Reply> for Outcome {
    fn from(r: Reply) -> Self {
        Self::Reply(r)
    }
}

type Out = Result<Outcome, ApiError>;

fn authed(shared: &Shared, req: &Req, zone: &str) -> Result<(), ApiError> {
    match req.header("x-auth-token") {
        None | Some("") => {
            return Err(ApiError::Auth {
                reason: "invalid_argument",
            })
        }
        Some(token) if token != shared.config.secret_key => {
            return Err(ApiError::Auth {
                reason: "not_found",
            })
        }
        Some(_) => {}
    }
    if catalog::is_zone(zone) {
        Ok(())
    } else {
        Err(ApiError::InvalidArguments {
            argument: "zone".to_owned(),
            help: format!(
                "unknown zone {zone:?}, expected one of {}",
                catalog::ZONES.join(", ")
            ),
        })
    }
}

fn body(req: &Req) -> Result<Value, ApiError> {
    req.json().map_err(|e| ApiError::InvalidRequest {
        message: format!("invalid JSON body: {e}"),
        fields: None,
    })
}

fn instance(shared: &Shared, req: &Req, zone: &str, rest: &[&str]) -> Out {
    let m = req.method.as_str();
    let now = shared.started.elapsed();
    let mut st = shared.state();
    let reply = match (m, rest) {
        ("GET", ["servers"]) => st.list_servers(zone, &filters(req), page(req, "per_page")),
        ("POST", ["servers"]) => st.create_server(zone, &body(req)?)?,
        ("GET", ["servers", id]) => st.get_server(zone, id)?,
        ("PATCH", ["servers", id]) => st.update_server(zone, id, &body(req)?)?,
        ("DELETE", ["servers", id]) => st.delete_server(zone, id)?,
        ("POST", ["servers", id, "action"]) => st.server_action(zone, id, &body(req)?, now)?,
        ("GET", ["servers", id, "action"]) => {
            st.get_server(zone, id)?;
            Reply::ok_json(
                json!({"actions": ["poweron", "backup", "stop_in_place", "poweroff", "terminate", "reboot", "enable_routed_ip"]}),
            )
        }
        ("POST", ["servers", id, "attach-volume"]) => st.attach_volume(zone, id, &body(req)?)?,
        ("POST", ["servers", id, "detach-volume"]) => st.detach_volume(zone, id, &body(req)?)?,
        ("GET", ["servers", id, "user_data"]) => st.list_user_data(zone, id)?,
        ("GET", ["servers", id, "user_data", key]) => {
            return Ok(Outcome::Raw(Resp::text(
                200,
                st.get_user_data(zone, id, key)?,
            )));
        }
        ("PATCH", ["servers", id, "user_data", key]) => {
            st.set_user_data(zone, id, key, &req.body)?
        }
        ("DELETE", ["servers", id, "user_data", key]) => st.delete_user_data(zone, id, key)?,
        ("GET", ["products", "servers"]) => public::server_types(zone, page(req, "per_page")),
        ("GET", ["products", "servers", "availability"]) => {
            st.availability(zone, page(req, "per_page"))
        }
        ("GET", ["images"]) => st.list_images(
            zone,
            req.param("name"),
            req.param("arch"),
            req.param("public").map(|p| p == "true"),
            page(req, "per_page"),
        ),
        ("GET", ["images", id]) => st.get_image(zone, id)?,
        ("GET", ["security_groups"]) => st.list_groups(zone, &filters(req), page(req, "per_page")),
        ("POST", ["security_groups"]) => st.create_group(zone, &body(req)?)?,
        ("GET", ["security_groups", id]) => st.get_group(zone, id)?,
        ("PATCH", ["security_groups", id]) => st.update_group(zone, id, &body(req)?)?,
        ("DELETE", ["security_groups", id]) => st.delete_group(zone, id)?,
        ("GET", ["security_groups", id, "rules"]) => {
            st.list_rules(zone, id, page(req, "per_page"))?
        }
        ("POST", ["security_groups", id, "rules"]) => st.create_rule(zone, id, &body(req)?)?,
        ("GET", ["security_groups", id, "rules", rule]) => st.get_rule(zone, id, rule)?,
        ("DELETE", ["security_groups", id, "rules", rule]) => st.delete_rule(zone, id, rule)?,
        ("GET", ["ips"]) => st.list_ips(zone, &filters(req), page(req, "per_page")),
        ("POST", ["ips"]) => st.create_ip(zone, &body(req)?)?,
        ("GET", ["ips", id]) => st.get_ip(zone, id)?,
        ("PATCH", ["ips", id]) => st.update_ip(zone, id, &body(req)?)?,
        ("DELETE", ["ips", id]) => st.delete_ip(zone, id)?,
        _ => return Err(no_route(req)),
    };
    Ok(reply.into())
}

fn block(shared: &Shared, req: &Req, zone: &str, rest: &[&str]) -> Out {
    let now = shared.started.elapsed();
    let mut st = shared.state();
    let reply = match (req.method.as_str(), rest) {
        ("GET", ["volumes"]) => st.list_block_volumes(zone, &filters(req), page(req, "page_size")),
        ("POST", ["volumes"]) => st.create_block_volume(zone, &body(req)?, now)?,
        ("GET", ["volumes", id]) => st.get_block_volume(zone, id)?,
        ("PATCH", ["volumes", id]) => st.update_block_volume(zone, id, &body(req)?, now)?,
        ("DELETE", ["volumes", id]) => st.delete_block_volume(zone, id)?,
        _ => return Err(no_route(req)),
    };
    Ok(reply.into())
}

fn marketplace(shared: &Shared, req: &Req, rest: &[&str]) -> Out {
    if req.method != "GET" {
        return Err(ApiError::MethodNotAllowed);
    }
    let st = shared.state();
    let reply = match rest {
        ["images"] => public::marketplace_images(
            req.param("arch"),
            req.param("category"),
            page(req, "page_size"),
        ),
        ["images", id] => public::marketplace_image(id)?,
        ["local-images"] => {
            let f = public::LocalImageFilters {
                zone: req.param("zone"),
                arch: req.param("arch"),
                kind: req.param("type"),
                image_label: req.param("image_label"),
                image_id: req.param("image_id"),
            };
            public::local_images(st.zone_images(), &f, page(req, "page_size"))
        }
        ["local-images", id] => public::local_image(st.zone_images(), id)?,
        _ => return Err(no_route(req)),
    };
    Ok(reply.into())
}

fn no_route(req: &Req) -> ApiError {
    ApiError::NoRoute(format!("{} {}", req.method, req.path))
}

fn control(shared: &Shared, req: &Req, rest: &[&str]) -> Resp {
    let bad = |why: String| Resp::json(400, &json!({"error": why}));
    match (req.method.as_str(), rest) {
        ("GET", ["state"]) => Resp::json(200, &shared.state().snapshot()),
        ("POST", ["reset"]) => {
            shared.state().reset();
            Resp::empty(204)
        }
        ("POST", ["stock"]) => {
            let Ok(b) = req.json() else {
                return bad("body is not JSON".to_owned());
            };
            let field = |k: &str| b.get(k).and_then(Value::as_str);
            match (field("zone"), field("commercial_type"), field("stock").and_then(Stock::parse)) {
                (Some(zone), Some(ct), Some(stock)) => {
                    shared.state().set_stock(zone, ct, stock);
                    Resp::empty(204)
                }
                _ => bad("expected {\"zone\", \"commercial_type\", \"stock\": available|scarce|shortage}".to_owned()),
            }
        }
        ("POST", ["ip-map"]) => {
            let Ok(b) = req.json() else {
                return bad("body is not JSON".to_owned());
            };
            let ip = b.get("public_ip").and_then(Value::as_str);
            let addr = b
                .get("address")
                .and_then(Value::as_str)
                .and_then(|a| a.parse::<SocketAddr>().ok());
            match (ip, addr) {
                (Some(ip), Some(addr)) => {
                    shared.state().map_public_ip(ip, addr);
                    Resp::empty(204)
                }
                _ => bad("expected {\"public_ip\", \"address\": \"HOST:PORT\"}".to_owned()),
            }
        }
        ("POST", ["ip-pool"]) => {
            let Ok(b) = req.json() else {
                return bad("body is not JSON".to_owned());
            };
            match b.get("pool") {
                Some(Value::Null) => {
                    shared.state().set_ip_pool(None);
                    Resp::empty(204)
                }
                Some(Value::String(text)) => match IpPool::parse(text) {
                    Ok(pool) => {
                        shared.state().set_ip_pool(Some(pool));
                        Resp::empty(204)
                    }
                    Err(e) => bad(e),
                },
                _ => bad("expected {\"pool\": \"FIRST-LAST\" | \"FIRST/COUNT\" | null}".to_owned()),
            }
        }
        ("GET", ["ip-map", ip]) => match shared.state().ip_mapping(ip) {
            Some(addr) => Resp::json(200, &json!({"public_ip": ip, "address": addr.to_string()})),
            None => Resp::json(404, &json!({"error": format!("{ip} is not mapped")})),
        },
        _ => Resp::json(
            404,
            &json!({"error": format!("no control endpoint {} {}", req.method, req.path)}),
        ),
    }
}
