//! The broker over a real UNIX socket, without the rig: a cached token is served without any
//! token request; when the token endpoint never answers or another process holds the
//! target's lock, the answer is an `ERR transient` line by the broker's deadline, not a hang.
//! Fairness: idle connections of another user, refused or allowed, never keep root or another
//! allowed user from their token.
//! (Real MTAs, peer refusal and revocation: perl/t/85-broker.t with the rig.)

use notify_broker::server::{self, Broker};
use notify_core::config::smtp::BrokerAllow;
use notify_core::config::ConfigLock;
use notify_core::oauth2::{TokenSet, UreqClient};
use notify_core::state::StateStore;
use notify_core::tokens::TokenManager;
use notify_core::{AuthMethod, NotificationConfig, Secret, Settings, SmtpSecrets, SmtpTarget};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADDRESS: &str = "relay@example.com";
const TOKEN: &str = "AT-cached-0123456789abcdef";

/// A token endpoint that accepts connections and never answers (a hung provider).
struct FaultInjectingSilentEndpoint {
    listener: TcpListener,
}

impl FaultInjectingSilentEndpoint {
    fn start() -> Self {
        FaultInjectingSilentEndpoint {
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
        }
    }
    fn url(&self) -> String {
        format!("http://{}/token", self.listener.local_addr().unwrap())
    }
}

struct Env {
    _dir: tempfile::TempDir,
    settings: Settings,
    socket: PathBuf,
    target: SmtpTarget,
}

fn setup(token_url: &str, deadline: Duration) -> Env {
    setup_allowing(token_url, deadline, BrokerAllow::default())
}

fn setup_allowing(token_url: &str, deadline: Duration, broker_allow: BrokerAllow) -> Env {
    let dir = tempfile::tempdir().unwrap();
    // other users' processes reach the socket inside
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    let target = SmtpTarget {
        auth_method: AuthMethod::OAuth2,
        port: Some(587),
        mode: notify_core::SmtpMode::Starttls,
        oauth2_client_id: Some("cid".into()),
        oauth2_token_url: Some(token_url.into()),
        oauth2_authorize_url: Some("http://127.0.0.1:9/auth".into()),
        oauth2_scope: Some("smtp".into()),
        broker_allow,
        ..SmtpTarget::new(
            "relay",
            "smtp.example.com",
            ADDRESS,
            vec!["ops@example.com".into()],
        )
    };
    let lock = ConfigLock::acquire(&settings).unwrap();
    let mut cfg = NotificationConfig::load(&settings).unwrap();
    cfg.add_smtp_target(&target, &SmtpSecrets::default())
        .unwrap();
    cfg.save(&settings, &lock).unwrap();
    drop(lock);
    let socket = dir.path().join("broker.sock");
    let listener = server::bind(&socket).unwrap();
    let broker = Arc::new(Broker::new(settings.clone(), deadline));
    std::thread::spawn(move || broker.serve(listener));
    Env {
        _dir: dir,
        settings,
        socket,
        target,
    }
}

fn authorize(env: &Env, expires_in: Option<Duration>) {
    authorize_target(env, &env.target, expires_in)
}

fn authorize_target(env: &Env, target: &SmtpTarget, expires_in: Option<Duration>) {
    let http = UreqClient::new(&env.settings).unwrap();
    TokenManager::new(&env.settings, &http)
        .store_authorization(
            target,
            &TokenSet {
                access_token: Secret::new(TOKEN),
                expires_in,
                refresh_token: Some(Secret::new("RT-0123456789abcdef")),
            },
        )
        .unwrap();
}

/// One request; the answer, read with a generous bound so a hanging broker fails the test.
fn ask(env: &Env, line: &str) -> String {
    let mut c = UnixStream::connect(&env.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(line.as_bytes()).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    // a broker that closes without reading what was sent resets the connection after its
    // answer: keep what came
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn serves_the_cached_token_without_a_token_request() {
    // the token URL leads nowhere: any token request would fail
    let env = setup("http://127.0.0.1:9/token", Duration::from_secs(5));
    authorize(&env, Some(Duration::from_secs(3600)));
    assert_eq!(
        ask(&env, &format!("SMTP {ADDRESS}\n")),
        format!("user={ADDRESS}\x01auth=Bearer {TOKEN}\x01\x01")
    );
    assert_eq!(
        ask(&env, &format!("TOKEN {}", ADDRESS.to_uppercase())),
        TOKEN
    );
}

#[test]
fn a_hung_token_endpoint_is_a_transient_error_by_the_deadline() {
    let endpoint = FaultInjectingSilentEndpoint::start();
    let env = setup(&endpoint.url(), Duration::from_secs(2));
    authorize(&env, None); // no cached token: the broker must refresh
    let started = Instant::now();
    let answer = ask(&env, &format!("SMTP {ADDRESS}\n"));
    assert!(answer.starts_with("ERR transient "), "{answer}");
    assert!(answer.ends_with('\n') && answer.matches('\n').count() == 1);
    assert!(!answer.contains("RT-0123"), "{answer}");
    // the answer came from the broker's deadline, not from the client's 30 s bound
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_held_target_lock_is_a_transient_error_by_the_deadline() {
    let env = setup("http://127.0.0.1:9/token", Duration::from_secs(2));
    authorize(&env, Some(Duration::from_secs(3600)));
    let store = StateStore::new(&env.settings);
    let _held = store
        .lock_until("relay", Instant::now() + Duration::from_secs(1))
        .unwrap();
    let answer = ask(&env, &format!("SMTP {ADDRESS}\n"));
    assert!(answer.starts_with("ERR transient "), "{answer}");
    assert!(!answer.contains(TOKEN));
}

#[test]
fn an_unknown_address_names_invalid_targets_the_admin_may_have_meant() {
    let env = setup("http://127.0.0.1:9/token", Duration::from_secs(2));
    assert!(ask(&env, "TOKEN other@example.com\n").starts_with("ERR not-found "));
    let mut cfg = std::fs::read_to_string(env.settings.config_file()).unwrap();
    cfg.push_str("\nsmtp: broken\n\tserver smtp.example.com\n\tmailto ops@example.com\n");
    std::fs::write(env.settings.config_file(), cfg).unwrap();
    let answer = ask(&env, "TOKEN other@example.com\n");
    assert!(answer.starts_with("ERR needs-admin-fix "), "{answer}");
    assert!(answer.contains("invalid targets (broken)"), "{answer}");
}

/// Clients of another user: a forked child that switched to `uid`/`gid` keeps `n`
/// connections to the broker open, sending `request` on each (nothing: idle connections), and
/// opens a new one whenever the broker closes one (an attacker holding what it can, for as long
/// as it likes). Killed on drop.
struct IdleClients {
    pid: libc::pid_t,
}

impl IdleClients {
    /// Returns once all `n` connections were made once.
    fn start(socket: &Path, uid: u32, gid: u32, n: usize) -> Self {
        Self::sending(socket, uid, gid, n, b"")
    }

    /// The same, each connection sending `request`.
    fn sending(socket: &Path, uid: u32, gid: u32, n: usize, request: &'static [u8]) -> Self {
        use std::os::unix::ffi::OsStrExt;
        // everything the child needs is prepared here: after fork() in this multi-threaded
        // process the child only makes system calls (no allocation, no locks)
        // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let path = socket.as_os_str().as_bytes();
        assert!(path.len() < addr.sun_path.len(), "socket path too long");
        for (d, s) in addr.sun_path.iter_mut().zip(path) {
            *d = *s as libc::c_char;
        }
        let addr_len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let mut fds = vec![-1 as libc::c_int; n];
        let mut polls = vec![
            libc::pollfd {
                fd: -1,
                events: 0,
                revents: 0
            };
            n
        ];
        let mut ready = [0 as libc::c_int; 2];
        // SAFETY: ready is a writable array of two ints.
        assert_eq!(
            unsafe { libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) },
            0
        );
        // SAFETY: the child below only calls async-signal-safe functions on memory prepared
        // before the fork, and ends with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: system calls on the prepared buffers; see above.
            unsafe {
                // keep nothing of the parent: a file lock another test thread holds right now
                // (its state's lock file) would stay held for as long as this child lives
                let ready_w = 3;
                if libc::dup2(ready[1], ready_w) != ready_w
                    || libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0
                {
                    libc::_exit(4);
                }
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    libc::_exit(2);
                }
                // gone with the test, even if it is killed (after setuid, which clears it)
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // the broker may close before the request is written
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                let connect = |fd: &mut libc::c_int| {
                    *fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                    let ok = *fd >= 0
                        && libc::connect(*fd, (&addr as *const libc::sockaddr_un).cast(), addr_len)
                            == 0;
                    if ok && !request.is_empty() {
                        libc::write(*fd, request.as_ptr().cast(), request.len());
                    }
                    ok
                };
                for fd in fds.iter_mut() {
                    if !connect(fd) {
                        libc::_exit(3);
                    }
                }
                libc::write(ready_w, b"r".as_ptr().cast(), 1);
                loop {
                    for (p, fd) in polls.iter_mut().zip(fds.iter()) {
                        *p = libc::pollfd {
                            fd: *fd,
                            events: libc::POLLIN,
                            revents: 0,
                        };
                    }
                    libc::poll(polls.as_mut_ptr(), n as libc::nfds_t, 1000);
                    // at most ten reconnections a second per connection: an attacker
                    // could go faster, but the point is holding, not flooding
                    let pause = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 100_000_000,
                    };
                    libc::nanosleep(&pause, std::ptr::null_mut());
                    for (p, fd) in polls.iter().zip(fds.iter_mut()) {
                        if p.revents != 0 {
                            libc::close(*fd);
                            connect(fd);
                        }
                    }
                }
            }
        }
        // SAFETY: closing our copy of the write end; reading one byte into a local.
        unsafe {
            libc::close(ready[1]);
            let mut b = 0u8;
            let got = libc::read(ready[0], (&mut b as *mut u8).cast(), 1);
            libc::close(ready[0]);
            if got != 1 {
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
                panic!("idle client as uid {uid} failed (wait status {status})");
            }
        }
        IdleClients { pid }
    }
}

impl Drop for IdleClients {
    fn drop(&mut self) {
        // SAFETY: our own child; reaped here.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// True when this test may switch users; else it says why it does nothing.
fn can_switch_users() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED: needs root (idle clients of other users)");
    }
    root
}

/// Generous for an answer from a cached token (about a millisecond), short against the
/// request-line deadline and the seconds idle connections are held for.
const FAIR_BOUND: Duration = Duration::from_secs(1);

/// Root asks a few times while the idle clients hold on; every answer is the token, in time.
fn root_is_served(env: &Env) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let started = Instant::now();
        let answer = ask(env, &format!("TOKEN {ADDRESS}\n"));
        let took = started.elapsed();
        assert_eq!(answer, TOKEN, "root's request #{i} after {took:?}");
        assert!(took < FAIR_BOUND, "root's request #{i} took {took:?}");
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(300));
    }
    slowest
}

/// `oxnotify token --broker` as another user: (exit code, stdout, how long it took).
fn token_as(env: &Env, uid: u32, gid: u32) -> (Option<i32>, String, Duration) {
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oxnotify-token"))
        .args(["--broker", ADDRESS, "--socket"])
        .arg(&env.socket)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        started.elapsed(),
    )
}

const ALLOWED_UID: u32 = 4242;
const OTHER_ALLOWED_UID: u32 = 4243;
const NOBODY: u32 = 65534;

fn fair_env() -> Env {
    let env = setup_allowing(
        "http://127.0.0.1:9/token",
        Duration::from_secs(5),
        BrokerAllow {
            users: vec![ALLOWED_UID.to_string(), OTHER_ALLOWED_UID.to_string()],
            groups: vec![],
        },
    );
    authorize(&env, Some(Duration::from_secs(3600)));
    env
}

#[test]
fn idle_connections_of_a_refused_user_do_not_keep_root_from_its_token() {
    if !can_switch_users() {
        return;
    }
    let env = fair_env();
    let _idle = IdleClients::start(&env.socket, NOBODY, NOBODY, 200);
    let slowest = root_is_served(&env);
    let (code, out, took) = token_as(&env, OTHER_ALLOWED_UID, OTHER_ALLOWED_UID);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), format!("{TOKEN}\n").as_str())
    );
    assert!(took < FAIR_BOUND, "an allowed user's request took {took:?}");
    eprintln!("200 idle connections of nobody: root served within {slowest:?}, uid {OTHER_ALLOWED_UID} within {took:?}");
    // and nobody itself is told no at once, without a request line
    let (code, _, took) = token_as(&env, NOBODY, NOBODY);
    assert_eq!(code, Some(77));
    assert!(took < FAIR_BOUND, "the refusal took {took:?}");
}

#[test]
fn idle_connections_of_an_allowed_user_do_not_keep_others_from_their_token() {
    if !can_switch_users() {
        return;
    }
    let env = fair_env();
    let _idle = IdleClients::start(&env.socket, ALLOWED_UID, ALLOWED_UID, 200);
    let slowest = root_is_served(&env);
    let (code, out, took) = token_as(&env, OTHER_ALLOWED_UID, OTHER_ALLOWED_UID);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), format!("{TOKEN}\n").as_str())
    );
    assert!(
        took < FAIR_BOUND,
        "another allowed user's request took {took:?}"
    );
    eprintln!("200 idle connections of uid {ALLOWED_UID}: root served within {slowest:?}, uid {OTHER_ALLOWED_UID} within {took:?}");
}

#[test]
fn requests_of_an_allowed_user_that_hold_workers_do_not_keep_others_from_their_token() {
    if !can_switch_users() {
        return;
    }
    let env = fair_env();
    // a second target only ALLOWED_UID may use, whose token endpoint never answers: each of
    // its requests holds a worker until the deadline
    let endpoint = FaultInjectingSilentEndpoint::start();
    let hung = SmtpTarget {
        name: "hung".into(),
        from_address: "hung@example.com".into(),
        oauth2_token_url: Some(endpoint.url()),
        broker_allow: BrokerAllow {
            users: vec![ALLOWED_UID.to_string()],
            groups: vec![],
        },
        ..env.target.clone()
    };
    let lock = ConfigLock::acquire(&env.settings).unwrap();
    let mut cfg = NotificationConfig::load(&env.settings).unwrap();
    cfg.add_smtp_target(&hung, &SmtpSecrets::default()).unwrap();
    cfg.save(&env.settings, &lock).unwrap();
    drop(lock);
    authorize_target(&env, &hung, None);
    let _busy = IdleClients::sending(
        &env.socket,
        ALLOWED_UID,
        ALLOWED_UID,
        200,
        b"TOKEN hung@example.com\n",
    );
    let slowest = root_is_served(&env);
    let (code, out, took) = token_as(&env, OTHER_ALLOWED_UID, OTHER_ALLOWED_UID);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), format!("{TOKEN}\n").as_str())
    );
    assert!(
        took < FAIR_BOUND,
        "another allowed user's request took {took:?}"
    );
    eprintln!("200 hanging requests of uid {ALLOWED_UID}: root served within {slowest:?}, uid {OTHER_ALLOWED_UID} within {took:?}");
}
