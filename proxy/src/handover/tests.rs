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

#[test]
fn the_successor_gets_the_very_socket_and_the_old_router_hears_once_it_serves() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("upgrade.sock");
    let (_offered, addr, handed_over) = offering(&path);

    let mut taken = take(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(taken.from_pid, std::process::id());
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
    assert_eq!(taken.confirm().ok(), Some(std::process::id()));
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
    drop(take(&path).unwrap_or_else(|e| panic!("{e}")));
    // Asks for something else.
    let mut stranger = UnixStream::connect(&path).unwrap_or_else(|e| panic!("{e}"));
    stranger
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rest = Vec::new();
    let _ = stranger.read_to_end(&mut rest);
    assert!(rest.is_empty(), "answered a stranger: {rest:?}");

    // The next successor is served as the first would have been.
    let taken = take(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(handed_over.try_recv().is_err());
    assert!(taken.confirm().is_ok());
    assert!(handed_over.recv_timeout(Duration::from_secs(10)).is_ok());
}

#[test]
fn a_stopping_router_refuses_and_a_running_one_cannot_be_started_beside() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("upgrade.sock");
    let (offered, _, _) = offering(&path);
    let beside = Offer::claim(&path).err().map(|e| e.to_string());
    assert!(
        beside
            .as_deref()
            .is_some_and(|m| m.contains("already running") && m.contains("serve --upgrade")),
        "{beside:?}"
    );
    offered.withdraw();
    let refused = take(&path).err().map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|m| m.contains("refused") && m.contains("it is stopping")),
        "{refused:?}"
    );
}

#[test]
fn a_dead_routers_socket_is_replaced_and_any_other_file_is_left_alone() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("upgrade.sock");
    // A socket no one accepts on any more.
    drop(Offer::claim(&path).unwrap_or_else(|e| panic!("{e}")));
    assert!(path.exists());
    let nothing = take(&path).err().map(|e| e.to_string());
    assert!(
        nothing
            .as_deref()
            .is_some_and(|m| m.contains("no router answers")),
        "{nothing:?}"
    );
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
