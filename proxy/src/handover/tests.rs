use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use super::*;

fn listening() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    (l, addr)
}

/// An offer of one listener under the key `public`, opened; the receiver gets the
/// successor's process id once it serves.
fn offering(path: &std::path::Path) -> (Offered, SocketAddr, mpsc::Receiver<u32>) {
    let (socket, addr) = listening();
    let offered = Offered::new(vec![("public".to_owned(), socket)]);
    let (tx, rx) = mpsc::channel();
    Offer::claim(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .open(offered.clone(), move |pid| {
            let _ = tx.send(pid);
        })
        .unwrap_or_else(|e| panic!("{e}"));
    (offered, addr, rx)
}

/// Asks at `path`, where no router may answer.
fn no_router_answers(path: &std::path::Path) {
    let nothing = take(path, Box::new(|| {})).err().map(|e| e.to_string());
    assert!(
        nothing
            .as_deref()
            .is_some_and(|m| m.contains("no router answers")),
        "{nothing:?}"
    );
}

#[test]
fn the_successor_gets_the_very_socket_and_the_old_router_hears_once_it_serves() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("upgrade.sock");
    let (_offered, addr, handed_over) = offering(&path);

    let mut taken = take(&path, Box::new(|| {})).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(taken.from_pid, Some(std::process::id()));
    let socket = taken
        .sockets
        .remove("public")
        .unwrap_or_else(|| panic!("no socket under its key"));
    assert!(taken.sockets.is_empty());
    // The same socket: a connection to the old address is accepted on it.
    let mut client = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    socket
        .set_nonblocking(false)
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut server, _) = socket.accept().unwrap_or_else(|e| panic!("{e}"));
    client.write_all(b"x").unwrap_or_else(|e| panic!("{e}"));
    let mut byte = [0u8];
    server
        .read_exact(&mut byte)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&byte, b"x");

    // Not handed over until the successor serves.
    assert!(handed_over.try_recv().is_err());
    assert!(taken.confirm().is_ok());
    let pid = handed_over
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pid, std::process::id());
}

#[test]
fn a_successor_that_goes_away_before_serving_leaves_the_offer_standing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("upgrade.sock");
    let (_offered, _, handed_over) = offering(&path);

    // Takes the sockets and dies.
    drop(take(&path, Box::new(|| {})).unwrap_or_else(|e| panic!("{e}")));
    // Asks for something else.
    let mut stranger = UnixStream::connect(&path).unwrap_or_else(|e| panic!("{e}"));
    stranger
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rest = Vec::new();
    let _ = stranger.read_to_end(&mut rest);
    assert!(rest.is_empty(), "answered a stranger: {rest:?}");

    // The next successor is served as the first would have been.
    let taken = take(&path, Box::new(|| {})).unwrap_or_else(|e| panic!("{e}"));
    assert!(handed_over.try_recv().is_err());
    assert!(taken.confirm().is_ok());
    assert!(handed_over.recv_timeout(Duration::from_secs(10)).is_ok());
}

#[test]
fn a_running_router_cannot_be_started_beside_and_a_stopping_one_takes_its_socket_away() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("upgrade.sock");
    let (offered, addr, _) = offering(&path);
    let beside = Offer::claim(&path).err().map(|e| e.to_string());
    assert!(
        beside
            .as_deref()
            .is_some_and(|m| m.contains("already running") && m.contains("serve --upgrade")),
        "{beside:?}"
    );
    offered.withdraw();
    // The socket file is gone, and with it the offer: a router may start afresh.
    assert!(!path.exists());
    no_router_answers(&path);
    // The offered copy of the listener is closed: nothing listens at its address now.
    assert!(TcpStream::connect(addr).is_err());
    assert!(Offer::claim(&path).is_ok());
}

#[test]
fn a_router_stopping_after_its_handover_leaves_the_successors_socket() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("upgrade.sock");
    let (offered, _, handed_over) = offering(&path);
    let taken = take(&path, Box::new(|| {})).unwrap_or_else(|e| panic!("{e}"));
    assert!(taken.confirm().is_ok());
    assert!(handed_over.recv_timeout(Duration::from_secs(10)).is_ok());
    // The successor's own offer, at the same path.
    let successors = Offer::replace(&path).unwrap_or_else(|e| panic!("{e}"));
    offered.withdraw();
    assert!(path.exists(), "the successor's socket was removed");
    drop(successors);
}

#[test]
fn a_dead_routers_socket_is_replaced_and_any_other_file_is_left_alone() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("upgrade.sock");
    // A socket no one accepts on any more.
    drop(Offer::claim(&path).unwrap_or_else(|e| panic!("{e}")));
    assert!(path.exists());
    no_router_answers(&path);
    assert!(Offer::claim(&path).is_ok());

    let file = dir.path().join("edge.toml");
    std::fs::write(&file, "kept").unwrap_or_else(|e| panic!("{e}"));
    for e in [Offer::claim(&file).err(), Offer::replace(&file).err()] {
        let e = e.map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|m| m.contains("is not a socket")),
            "{e:?}"
        );
    }
    assert_eq!(std::fs::read_to_string(&file).ok().as_deref(), Some("kept"));

    let nowhere = dir.path().join("missing").join("upgrade.sock");
    let e = Offer::claim(&nowhere).err().map(|e| e.to_string());
    assert!(
        e.as_deref().is_some_and(|m| m.starts_with(&format!(
            "cannot listen at upgrade_socket {}: ",
            nowhere.display()
        ))),
        "{e:?}"
    );
}

#[test]
fn a_predecessor_that_never_says_it_drains_leaves_the_handover_unconfirmed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("upgrade.sock");
    let door = std::os::unix::net::UnixListener::bind(&path).unwrap_or_else(|e| panic!("{e}"));
    // A predecessor that hands a socket over, hears the successor serves, and hangs up.
    let predecessor = std::thread::spawn(move || {
        let (mut conn, _) = door.accept().unwrap_or_else(|e| panic!("{e}"));
        let request = wire::read_line(&mut conn).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request, wire::REQUEST);
        let (socket, _) = listening();
        wire::send_answer(
            &mut conn,
            &wire::Answer::Listeners(vec!["public".to_owned()]),
            &[socket],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let serving = wire::read_line(&mut conn).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(serving, wire::SERVING);
    });
    let taken = take(&path, Box::new(|| {})).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(taken.sockets.len(), 1);
    let unconfirmed = taken.confirm().err().map(|e| e.to_string());
    assert!(
        unconfirmed
            .as_deref()
            .is_some_and(|m| m.contains("closed the connection")),
        "{unconfirmed:?}"
    );
    predecessor
        .join()
        .unwrap_or_else(|_| panic!("the predecessor failed"));
}

#[test]
fn a_predecessor_is_alive_until_its_process_has_exited() {
    assert!(take::is_alive(std::process::id()));
    // Above any process id the system hands out.
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(4_194_304);
    assert!(!take::is_alive(max + 1));
    // The state follows the name, which may hold anything, `) Z` included. (Read, not made:
    // a child spawned here would hold the other tests' sockets between fork and exec.)
    for (stat, running) in [
        ("42 (nexus-edge) S 1 42 42 0 -1", true),
        ("42 (nexus-edge) R 1", true),
        ("42 (nexus-edge) Z 1 42", false),
        ("42 (nexus-edge) X 1", false),
        ("42 (odd) Z name) S 1", true),
        ("42 (odd) S name) Z 1", false),
    ] {
        assert_eq!(take::stat_says_running(stat), running, "{stat}");
    }
}
