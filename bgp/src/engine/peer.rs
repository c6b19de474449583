//! One peer's task: it runs the peer's [`Fsm`] and [`AdjRibOut`], carries out what the FSM
//! outputs (connections, timers, messages, BFD), and one reader and one writer task per TCP
//! connection. The engine (the parent module) owns the peers and hands them messages.

use super::*;

pub(super) fn spawn_peer(
    config: PeerConfig,
    shared: &Arc<Shared>,
    rib: AdjRibOut,
    bfd_counters: Option<Arc<bfd_driver::Counters>>,
) -> PeerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let counters = Arc::new(Counters::default());
    let bfd_counters = bfd_counters.unwrap_or_default();
    let fsm = Fsm::new(config.fsm_config(shared.router_id));
    let span = info_span!("bgp_peer", peer = %config.key());
    let task = PeerTask {
        config: config.clone(),
        fsm,
        rib,
        tx: tx.clone(),
        conns: HashMap::new(),
        timers: HashMap::new(),
        connect: None,
        connect_seq: 0,
        session: None,
        counters: counters.clone(),
        events: shared.events.clone(),
        closing: Vec::new(),
        md5_hint_logged: false,
        bfd_driver: shared.bfd.clone(),
        bfd: None,
        bfd_counters: bfd_counters.clone(),
        bfd_up: false,
        waiting_for_bfd: None,
    };
    let task = tokio::spawn(task.run(rx).instrument(span));
    PeerHandle {
        tx,
        counters,
        bfd_counters,
        config,
        task,
    }
}

struct ConnHandle {
    writer: mpsc::UnboundedSender<Vec<u8>>,
    writer_task: JoinHandle<()>,
    reader: JoinHandle<()>,
    local: Option<SocketAddr>,
    ctx: DecodeContext,
}

struct Session {
    conn: ConnId,
    params: SessionParams,
}

struct PeerTask {
    config: PeerConfig,
    fsm: Fsm,
    rib: AdjRibOut,
    tx: mpsc::UnboundedSender<PeerMsg>,
    conns: HashMap<ConnId, ConnHandle>,
    timers: HashMap<Timer, Instant>,
    /// The outgoing connection attempt: its number, when it started, its task.
    connect: Option<(u64, Instant, JoinHandle<()>)>,
    connect_seq: u64,
    session: Option<Session>,
    counters: Arc<Counters>,
    events: mpsc::UnboundedSender<SessionEvent>,
    /// Writers of closed connections still flushing (a NOTIFICATION, then FIN).
    closing: Vec<JoinHandle<()>>,
    /// The MD5 mismatch hint was logged since the last established session.
    md5_hint_logged: bool,
    bfd_driver: Arc<BfdDriver>,
    /// The peer's BFD session, started from the local address of the first established
    /// session (and again when that address changes).
    bfd: Option<bfd_driver::SessionHandle>,
    bfd_counters: Arc<bfd_driver::Counters>,
    bfd_up: bool,
    /// An established session whose routes wait for BFD to come up.
    waiting_for_bfd: Option<Negotiated>,
}

impl PeerTask {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<PeerMsg>) -> AdjRibOut {
        self.feed(Input::Start);
        loop {
            let deadline = self
                .timers
                .iter()
                .min_by_key(|(_, d)| **d)
                .map(|(t, d)| (*t, *d));
            let msg = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => {
                        self.feed(Input::Stop(StopReason::Deconfigured));
                        break;
                    }
                },
                _ = sleep_until(deadline.map(|d| d.1)) => {
                    if let Some((t, _)) = deadline {
                        self.timers.remove(&t);
                        self.feed(Input::TimerExpired(t));
                    }
                    continue;
                }
            };
            match msg {
                PeerMsg::SetRoutes(routes) => {
                    self.rib.set_desired(routes);
                    self.flush_rib();
                }
                PeerMsg::Stop(reason, done) => {
                    self.feed(Input::Stop(reason));
                    self.close_all().await;
                    let _ = done.send(());
                    break;
                }
                PeerMsg::Accepted(stream) => {
                    debug!(from = ?stream.peer_addr().ok(), "connection accepted");
                    if let Err(e) = self.prepare_accepted(&stream) {
                        warn!(error = %e, "socket options on accepted connection failed");
                    }
                    let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                    self.attach(id, stream);
                    self.feed(Input::TcpConnected {
                        conn: id,
                        inbound: true,
                    });
                }
                PeerMsg::Connected(seq, result) => {
                    if self.connect.as_ref().map(|c| c.0) != Some(seq) {
                        continue;
                    }
                    self.connect = None;
                    match result {
                        Ok(stream) => {
                            debug!(local = ?stream.local_addr().ok(), "connected");
                            let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                            self.attach(id, stream);
                            self.feed(Input::TcpConnected {
                                conn: id,
                                inbound: false,
                            });
                        }
                        Err(e) => {
                            self.connect_failed(&e);
                            self.feed(Input::TcpFailed { conn: None });
                        }
                    }
                }
                PeerMsg::Fsm(input) => self.feed(*input),
                PeerMsg::Bfd(change) => self.bfd_changed(change),
                PeerMsg::BfdTimers(b) => {
                    self.config.bfd = Some(b);
                    if let Some(h) = &self.bfd {
                        h.set_timers(&b);
                    }
                }
            }
        }
        if let Some((_, _, t)) = self.connect.take() {
            t.abort();
        }
        self.rib
    }

    /// A TCP MD5 mismatch shows as nothing but silence (the peer's kernel drops every
    /// unsigned or wrongly signed segment), so say so once per failure streak.
    fn connect_failed(&mut self, e: &io::Error) {
        if self.config.md5_password.is_some()
            && e.kind() == io::ErrorKind::TimedOut
            && !self.md5_hint_logged
        {
            self.md5_hint_logged = true;
            warn!(error = %e, "connect failed; TCP MD5 is configured for this peer and a password mismatch drops every segment silently: check that both sides use the same password");
        } else {
            debug!(error = %e, "connect failed");
        }
    }

    fn prepare_accepted(&self, stream: &TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)?;
        if let Some(hops) = self.config.gtsm_hops {
            let v6 = self.config.address.is_ipv6();
            sockopt::set_min_ttl(stream, v6, 255 - hops + 1)?;
            set_ttl(stream, v6, 255)?;
        } else if let Some(ttl) = self.ttl() {
            set_ttl(stream, self.config.address.is_ipv6(), ttl as u32)?;
        }
        Ok(())
    }

    fn ttl(&self) -> Option<u8> {
        match (self.config.ebgp_multihop, self.config.is_ibgp()) {
            (Some(t), _) => Some(t),
            (None, false) => Some(1),
            (None, true) => None,
        }
    }

    /// Runs one input through the FSM and carries out its outputs.
    fn feed(&mut self, input: Input) {
        for out in self.fsm.process(input) {
            self.apply(out);
        }
        self.counters
            .state
            .store(state_code(self.fsm.state()), Ordering::Relaxed);
    }

    fn send_bytes(&mut self, conn: ConnId, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        if let Some(c) = self.conns.get(&conn) {
            bump(&self.counters.bytes_sent, bytes.len() as u64);
            let _ = c.writer.send(bytes);
        }
    }

    fn apply(&mut self, out: Output) {
        match out {
            Output::Connect => self.start_connect(),
            Output::CancelConnect => self.abandon_connect(),
            Output::Send(conn, msg) => {
                let ctx = self.conns.get(&conn).map(|c| c.ctx).unwrap_or_default();
                match &msg {
                    Message::Notification(n) => {
                        info!(notification = %n, "sending NOTIFICATION");
                        bump(&self.counters.notifications_sent, 1);
                    }
                    Message::Update(_) => bump(&self.counters.updates_sent, 1),
                    _ => {}
                }
                bump(&self.counters.messages_sent, 1);
                match msg.to_bytes(&ctx) {
                    Ok(b) => self.send_bytes(conn, b),
                    Err(e) => warn!(error = %e, "message not sent"),
                }
            }
            Output::Close(conn) => {
                if let Some(c) = self.conns.remove(&conn) {
                    // Dropping the sender lets the writer flush, then shut the socket down.
                    drop(c.writer);
                    self.closing.retain(|t| !t.is_finished());
                    self.closing.push(c.writer_task);
                    let reader = c.reader;
                    tokio::spawn(async move {
                        // Keep reading (and discarding) briefly so the peer gets a FIN and
                        // our NOTIFICATION rather than a reset.
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        reader.abort();
                    });
                }
            }
            Output::StartTimer(t, d) => {
                self.timers.insert(t, Instant::now() + d);
            }
            Output::StopTimer(t) => {
                self.timers.remove(&t);
            }
            Output::Established(n) => self.established(n),
            Output::Down(reason) => {
                info!(%reason, "session down");
                if self.waiting_for_bfd.take().is_some() {
                    // Never declared up, so not down either.
                    return;
                }
                self.session = None;
                self.rib.session_reset();
                let _ = self.events.send(SessionEvent {
                    peer: self.config.key(),
                    kind: SessionEventKind::Down(reason),
                });
            }
            Output::RouteRefreshRequested(family) => {
                bump(&self.counters.route_refreshes_received, 1);
                if let Some(s) = &self.session {
                    let mut buf = Vec::new();
                    let stats = self.rib.refresh(family, &s.params, &mut buf);
                    let conn = s.conn;
                    self.count_drain(stats);
                    self.send_bytes(conn, buf);
                }
            }
            Output::UpdateReceived {
                treat_as_withdraw, ..
            } => {
                bump(&self.counters.updates_received, 1);
                if treat_as_withdraw {
                    bump(&self.counters.treat_as_withdraw, 1);
                }
            }
        }
    }

    fn count_drain(&self, s: crate::rib_out::DrainStats) {
        bump(&self.counters.updates_sent, s.updates);
        bump(&self.counters.messages_sent, s.updates);
        bump(&self.counters.prefixes_announced, s.announced);
        bump(&self.counters.prefixes_withdrawn, s.withdrawn);
        self.counters
            .unsendable_routes
            .store(s.unsendable, Ordering::Relaxed);
    }

    /// A session is established: start BFD if configured, and announce routes unless they
    /// wait for BFD.
    fn established(&mut self, n: Negotiated) {
        let Some(bfd) = self.config.bfd else {
            return self.declare_up(n);
        };
        let local = self.conns.get(&n.conn).and_then(|c| c.local).map(|a| {
            let mut a = a;
            a.set_ip(unmap(a.ip()));
            a
        });
        if let Some(local) = local {
            if self.bfd.as_ref().map(|h| h.local) != Some(local.ip()) {
                self.bfd = None;
                self.bfd_up = false;
                let tx = self.tx.clone();
                let device = self.config.interface.as_ref().or(self.config.vrf.as_ref());
                match self.bfd_driver.open(
                    bfd_driver::BfdPath {
                        peer: self.config.address,
                        local,
                        device: device.map(String::as_str),
                        vrf: self.config.vrf.as_deref(),
                    },
                    &bfd,
                    self.bfd_counters.clone(),
                    move |c| {
                        let _ = tx.send(PeerMsg::Bfd(c));
                    },
                ) {
                    Ok(h) => self.bfd = Some(h),
                    Err(e) => warn!(error = %e, "BFD session could not start"),
                }
            }
        }
        if bfd.hold_routes_until_up && !self.bfd_up {
            info!("session established; routes wait for BFD to come up");
            self.waiting_for_bfd = Some(n);
            return;
        }
        self.declare_up(n);
    }

    fn bfd_changed(&mut self, c: BfdChange) {
        if self.bfd.as_ref().map(|h| h.disc) != Some(c.local_discriminator) {
            return; // from a session already replaced
        }
        self.bfd_up = c.to == BfdState::Up;
        if self.bfd_up {
            if let Some(n) = self.waiting_for_bfd.take() {
                self.declare_up(n);
            }
        } else if c.path_failed() {
            warn!(diagnostic = %c.diagnostic, "BFD down: ending the BGP session");
            self.feed(Input::BfdDown);
        } else if c.from == BfdState::Up {
            info!(to = %c.to, peer = %c.peer_state, "BFD administratively down; BGP stays up");
        }
    }

    fn declare_up(&mut self, n: Negotiated) {
        let local = self
            .conns
            .get(&n.conn)
            .and_then(|c| c.local)
            .map(|a| match a.ip() {
                IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6)),
                v4 => v4,
            });
        let local_ip = local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let params = SessionParams {
            ctx: n.decode_context(),
            local_asn: self.config.local_asn,
            families: n.families.clone(),
            next_hop_v4: self.config.next_hop_v4.or(match local_ip {
                IpAddr::V4(a) if !a.is_unspecified() => Some(a),
                _ => None,
            }),
            next_hop_v6: self.config.next_hop_v6.or(match local_ip {
                IpAddr::V6(a) => Some(a),
                _ => None,
            }),
            ipv4_with_ipv6_next_hop: n.ipv4_with_ipv6_next_hop(),
            next_hop_link_local: match local_ip {
                IpAddr::V6(a) if is_link_local(local_ip) => Some(a),
                _ => None,
            },
            enhanced_route_refresh: n.enhanced_route_refresh,
        };
        if let Some(c) = self.conns.get_mut(&n.conn) {
            c.ctx = params.ctx;
        }
        info!(
            peer_as = n.peer_asn,
            hold = n.hold_time,
            "session established"
        );
        bump(&self.counters.established_transitions, 1);
        self.md5_hint_logged = false;
        let info = SessionInfo {
            peer_asn: n.peer_asn,
            peer_router_id: n.peer_router_id,
            local_address: local_ip,
            hold_time: n.hold_time,
            keepalive_time: n.keepalive_time,
            families: n.families.clone(),
            four_octet_asn: n.four_octet_asn,
            extended_messages: n.extended_messages,
            graceful_restart: n.graceful_restart,
            ipv4_with_ipv6_next_hop: n.ipv4_with_ipv6_next_hop(),
        };
        self.rib.session_reset();
        let mut buf = Vec::new();
        let stats = self.rib.drain(&params, &mut buf);
        self.count_drain(stats);
        // End-of-RIB after the initial table (RFC 4724; harmless without graceful restart).
        end_of_rib(&params, &mut buf);
        bump(&self.counters.updates_sent, params.families.len() as u64);
        bump(&self.counters.messages_sent, params.families.len() as u64);
        self.session = Some(Session {
            conn: n.conn,
            params,
        });
        self.send_bytes(n.conn, buf);
        let _ = self.events.send(SessionEvent {
            peer: self.config.key(),
            kind: SessionEventKind::Up(info),
        });
    }

    fn flush_rib(&mut self) {
        let Some(s) = &self.session else { return };
        if !self.rib.has_pending() {
            return;
        }
        let mut buf = Vec::new();
        let stats = self.rib.drain(&s.params, &mut buf);
        let conn = s.conn;
        self.count_drain(stats);
        self.send_bytes(conn, buf);
    }

    /// Stops the outgoing attempt. One that ran for the whole connect-retry time timed out,
    /// though the FSM's timer (of the same length) ended it before its own timeout did: it
    /// says so, as the MD5 hint depends on it.
    fn abandon_connect(&mut self) {
        let Some((_, started, t)) = self.connect.take() else {
            return;
        };
        t.abort();
        let retry = self.config.connect_retry.max(Duration::from_secs(1));
        if started.elapsed() + Duration::from_millis(50) >= retry {
            self.connect_failed(&io::Error::new(
                io::ErrorKind::TimedOut,
                "connect timed out",
            ));
        } else {
            debug!("connect attempt cancelled");
        }
    }

    fn start_connect(&mut self) {
        self.abandon_connect();
        self.connect_seq += 1;
        let seq = self.connect_seq;
        debug!(attempt = seq, timeout = ?self.config.connect_retry, "connecting");
        let tx = self.tx.clone();
        let cfg = self.config.clone();
        let ttl = self.ttl();
        let t = tokio::spawn(async move {
            let r = connect(&cfg, ttl).await;
            let _ = tx.send(PeerMsg::Connected(seq, r));
        });
        self.connect = Some((seq, Instant::now(), t));
    }

    fn attach(&mut self, id: ConnId, stream: TcpStream) {
        let local = stream.local_addr().ok();
        let (r, w) = stream.into_split();
        let (wtx, wrx) = mpsc::unbounded_channel();
        let writer_task = tokio::spawn(writer(id, w, wrx, self.tx.clone()));
        let reader = tokio::spawn(reader(
            id,
            r,
            self.tx.clone(),
            self.counters.clone(),
            ReaderCtx {
                extended_messages: self.config.extended_messages,
                ibgp: self.config.is_ibgp(),
            },
        ));
        self.conns.insert(
            id,
            ConnHandle {
                writer: wtx,
                writer_task,
                reader,
                local,
                ctx: DecodeContext::default(),
            },
        );
    }

    /// Closes every connection and waits (bounded) until the writers have flushed what was
    /// queued (the Cease NOTIFICATION) and shut the sockets down.
    async fn close_all(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.apply(Output::Close(id));
        }
        let writers = std::mem::take(&mut self.closing);
        let all = futures_join_all(writers);
        let _ = tokio::time::timeout(Duration::from_secs(3), all).await;
    }
}

/// Awaits every handle (no extra dependency for one join).
async fn futures_join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn set_ttl(stream: &TcpStream, v6: bool, ttl: u32) -> io::Result<()> {
    let s = socket2::SockRef::from(stream);
    if v6 {
        s.set_unicast_hops_v6(ttl)
    } else {
        s.set_ttl_v4(ttl)
    }
}

/// Where to connect to: a link-local address carries its link's index as scope.
fn peer_socket_addr(cfg: &PeerConfig) -> io::Result<SocketAddr> {
    match (cfg.address, &cfg.interface) {
        (IpAddr::V6(v6), Some(interface)) if is_link_local(cfg.address) => {
            let scope = sockopt::if_index(interface)
                .map_err(|e| io::Error::new(e.kind(), format!("interface {interface}: {e}")))?;
            Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
                v6, cfg.port, 0, scope,
            )))
        }
        _ => Ok(cfg.socket_addr()),
    }
}

async fn connect(cfg: &PeerConfig, ttl: Option<u8>) -> io::Result<TcpStream> {
    let addr = peer_socket_addr(cfg)?;
    let v6 = addr.is_ipv6();
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    // The link of an unnumbered peer, else the VRF: routes and source addresses come from it.
    if let Some(device) = cfg.interface.as_ref().or(cfg.vrf.as_ref()) {
        s.bind_device(Some(device.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("binding to {device}: {e}")))?;
    }
    if let Some(pw) = &cfg.md5_password {
        sockopt::set_tcp_md5(&s, addr, pw.as_bytes())?;
    }
    if let Some(hops) = cfg.gtsm_hops {
        sockopt::set_min_ttl(&s, v6, 255 - hops + 1)?;
        if v6 {
            s.set_unicast_hops_v6(255)?;
        } else {
            s.set_ttl_v4(255)?;
        }
    } else if let Some(ttl) = ttl {
        if v6 {
            s.set_unicast_hops_v6(ttl as u32)?;
        } else {
            s.set_ttl_v4(ttl as u32)?;
        }
    }
    if let Some(src) = cfg.source_address {
        s.bind(&SocketAddr::new(src, 0).into())?;
    }
    let socket = TcpSocket::from_std_stream(s.into());
    tokio::time::timeout(
        cfg.connect_retry.max(Duration::from_secs(1)),
        socket.connect(addr),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

#[derive(Clone, Copy)]
struct ReaderCtx {
    extended_messages: bool,
    ibgp: bool,
}

/// Reads frames, decodes them with the context the OPEN exchange implies, and passes them on.
async fn reader(
    id: ConnId,
    mut r: OwnedReadHalf,
    tx: mpsc::UnboundedSender<PeerMsg>,
    counters: Arc<Counters>,
    rc: ReaderCtx,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(65536);
    let mut start = 0usize;
    let mut ctx = DecodeContext::default();
    let fail = |error: MessageError| {
        let _ = tx.send(PeerMsg::Fsm(Box::new(Input::DecodeError {
            conn: id,
            error,
        })));
    };
    loop {
        // Decode every whole frame in the buffer.
        loop {
            let avail = &buf[start..];
            let len = match frame_len(avail, &ctx) {
                Ok(Some(len)) if avail.len() >= len => len,
                Ok(_) => break,
                Err(e) => return fail(e),
            };
            let frame = &avail[..len];
            start += len;
            bump(&counters.messages_received, 1);
            match Message::decode(frame, &ctx) {
                Ok(msg) => {
                    match &msg {
                        Message::Open(open) => {
                            // The session's encoding follows from the OPEN exchange; messages
                            // right behind the peer's KEEPALIVE must already use it.
                            ctx.four_octet_asn = open.four_octet_asn().is_some();
                            ctx.extended_messages = rc.extended_messages
                                && open.has(crate::packet::capability::cap_code::EXTENDED_MESSAGE);
                            ctx.ibgp = rc.ibgp;
                        }
                        Message::Notification(n) => {
                            bump(&counters.notifications_received, 1);
                            info!(notification = %n, "NOTIFICATION received");
                        }
                        _ => {}
                    }
                    if tx
                        .send(PeerMsg::Fsm(Box::new(Input::Received {
                            conn: id,
                            message: msg,
                        })))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => return fail(e),
            }
        }
        if start > 0 {
            buf.drain(..start);
            start = 0;
        }
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(PeerMsg::Fsm(Box::new(Input::TcpFailed { conn: Some(id) })));
                return;
            }
            Ok(_) => {}
        }
    }
}

/// Writes what is queued, many messages per syscall; reports when writes stall (RFC 9687).
async fn writer(
    id: ConnId,
    mut w: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    tx: mpsc::UnboundedSender<PeerMsg>,
) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while let Ok(more) = rx.try_recv() {
            buf.extend_from_slice(&more);
        }
        // Try without waiting first; only a full socket buffer counts as blocked.
        let written = match w.try_write(&buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => break,
        };
        if written < buf.len() {
            let _ = tx.send(PeerMsg::Fsm(Box::new(Input::SendBlocked { conn: id })));
            if w.write_all(&buf[written..]).await.is_err() {
                break;
            }
            let _ = tx.send(PeerMsg::Fsm(Box::new(Input::SendDrained { conn: id })));
        }
    }
    // Sender dropped: the connection is being closed.
    let _ = tokio::time::timeout(Duration::from_secs(2), w.shutdown()).await;
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
