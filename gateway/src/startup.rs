use crate::config::GatewayConfig;
use crate::dispatch;
use crate::routes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct AppState {
    pub store: store::Store,
    pub bus: bus::Bus,
    /// For what the gateway asks of a host's agent before it accepts a request.
    pub rpc: bus::RpcClient,
    pub config: Arc<GatewayConfig>,
    pub wake_relay: Arc<Notify>,
    pub auth_guard: Arc<crate::auth::AuthGuard>,
    pub principals: Arc<crate::auth::PrincipalCache>,
    /// Whether the state database answered its last ping: while it does not, the API answers
    /// 503 at once instead of waiting for a connection.
    pub state_up: Arc<std::sync::atomic::AtomicBool>,
    /// Makes the broker users of registered servers' agents (`HOSTING_BROKER_ADMIN_URL`).
    pub broker_admin: Option<bus::admin::BrokerAdmin>,
}

pub struct Application {
    listener: tokio::net::TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        let store =
            store::Store::connect(&config.common.database_url, 16, Duration::from_secs(60)).await?;
        if config.run_migrations {
            store.migrate().await?;
        }
        let bus = bus::Bus::new(
            &config.common.amqp_url,
            contract::Topology::new(&config.common.prefix),
            "gateway",
        );
        let broker_admin = config
            .broker_admin_url
            .as_deref()
            .map(|url| bus::admin::BrokerAdmin::new(url, &config.common.amqp_url))
            .transpose()?;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        tracing::info!(listen = %listener.local_addr()?, "gateway listening");
        Ok(Self {
            listener,
            state: AppState {
                store,
                rpc: bus::RpcClient::new(bus.clone()),
                bus,
                principals: Default::default(),
                auth_guard: Arc::new(crate::auth::AuthGuard::new(
                    Duration::from_secs(60),
                    config.auth_failures_per_minute,
                )),
                config: Arc::new(config),
                wake_relay: Arc::new(Notify::new()),
                state_up: Arc::new(std::sync::atomic::AtomicBool::new(true)),
                broker_admin,
            },
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let s = self.state.clone();
        // The broker may be down: the API still accepts tasks, which wait in the outbox.
        let background = {
            let s = s.clone();
            tokio::spawn(async move {
                let c = &s.config;
                let declare = {
                    let bus = s.bus.clone();
                    async move {
                        loop {
                            match bus
                                .declare_topology(&["installer", "backupper", "migrator"])
                                .await
                            {
                                Ok(()) => return,
                                Err(e) => {
                                    tracing::warn!(error = %e, "broker not ready; tasks wait in the outbox");
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                            }
                        }
                    }
                };
                let dead_letters = async {
                    declare.await;
                    redeclare_agent_queues(&s).await;
                    let queue = s.bus.topology().dead_letter_queue();
                    s.bus
                        .consume(
                            &queue,
                            4,
                            Arc::new(dispatch::DeadLetters {
                                store: s.store.clone(),
                                prefix: s.config.common.prefix.clone(),
                            }),
                        )
                        .await
                };
                tokio::join!(
                    watch_state_database(s.store.clone(), s.state_up.clone()),
                    dispatch::relay(s.store.clone(), s.bus.clone(), s.wake_relay.clone()),
                    dispatch::listen_for_outbox(s.store.clone(), s.wake_relay.clone()),
                    dispatch::sweeper(
                        s.store.clone(),
                        s.wake_relay.clone(),
                        c.sweep_interval,
                        c.redispatch_after,
                        c.max_attempts
                    ),
                    dead_letters,
                    record_heartbeats(s.store.clone(), s.bus.clone()),
                );
            })
        };
        let metrics = tokio::spawn(routes::serve_metrics(s.clone()));
        let app = routes::router(s.clone());
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(telemetry::shutdown_signal())
        .await?;
        background.abort();
        metrics.abort();
        s.bus.close().await;
        Ok(())
    }
}

/// Declares (again) the RPC queue of every registered server's agent: an agent on a host of
/// its own may not, and a queue lost with a broker's data must not leave it stranded.
async fn redeclare_agent_queues(s: &AppState) {
    let servers = match s.store.servers().await {
        Ok(list) => list,
        Err(e) => {
            return tracing::warn!(error = %e, "cannot list the servers to declare their agents' queues")
        }
    };
    for server in servers {
        let service = contract::agent_service(server.kind);
        if let Err(e) = s.bus.declare_rpc_queue(service, &server.name).await {
            tracing::warn!(error = %e, server = %server.name, service, "cannot declare the agent's RPC queue");
        }
    }
}

/// Records what the servers' agents say of themselves. A beat is believed only from the
/// broker user its server's agent was given (or, for a server given none, the services' own
/// user), as the broker vouches for it (`user_id`), and only with the routing key of the
/// server it names.
async fn record_heartbeats(store: store::Store, bus: bus::Bus) {
    let services_user = bus.user();
    bus.watch_heartbeats(|beat, sender, key| {
        let (store, services_user) = (store.clone(), services_user.clone());
        async move {
            let Some(sender) = sender else {
                return tracing::warn!(server = %beat.server, "a heartbeat without a user_id was ignored");
            };
            if key != contract::heartbeat_routing_key(beat.kind, &beat.server) {
                return tracing::warn!(%key, server = %beat.server, %sender, "a heartbeat naming another server than its routing key was ignored");
            }
            let cut = |s: &str| s.chars().take(200).collect::<String>();
            let software: serde_json::Map<String, serde_json::Value> = beat
                .software
                .iter()
                .take(16)
                .map(|(k, v)| (cut(k), serde_json::Value::String(cut(v))))
                .collect();
            match store
                .record_heartbeat(
                    beat.kind,
                    &beat.server,
                    &sender,
                    &services_user,
                    &cut(&beat.service),
                    &cut(&beat.version),
                    &serde_json::Value::Object(software),
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::warn!(server = %beat.server, kind = %beat.kind, ?sender, "a heartbeat for a server that is not registered, or from another server's broker user, was ignored"),
                Err(e) => tracing::debug!(error = %e, "heartbeat not recorded"),
            }
        }
    })
    .await
}

/// Pings the state database twice a second (each ping given a second) and keeps `up` true
/// while it answers.
async fn watch_state_database(store: store::Store, up: Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    // On a connection of its own: a pool busy with slow requests does not close the API.
    let prober = store.prober();
    loop {
        let answered = matches!(
            tokio::time::timeout(Duration::from_secs(1), prober.answers()).await,
            Ok(true)
        );
        if up.swap(answered, Ordering::SeqCst) != answered {
            if answered {
                tracing::info!("the state database answers again");
            } else {
                tracing::warn!(
                    "the state database does not answer; the API answers 503 until it does"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
