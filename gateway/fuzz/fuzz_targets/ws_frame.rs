//! Bytes from a client's socket → the frames tungstenite reads with the gateway's
//! limits → the gateway's answer to each message. Never panics; no message over
//! the cap gets through; every answer is a JSON object of type `pong` or `error`.

#![no_main]

use std::io::{self, Cursor, Read, Write};

use gateway::ws::{
    socket::reply_to,
    upgrade::{MAX_INBOUND, socket_config},
};
use libfuzzer_sys::fuzz_target;
use tungstenite::{
    Message,
    protocol::{Role, WebSocket},
};

/// The client's bytes to read; what the server writes is thrown away.
struct Wire(Cursor<Vec<u8>>);

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn check(message: Message) {
    if let Some(reply) = reply_to(&message) {
        let kind = reply["type"].as_str().expect("a reply has a type");
        assert!(kind == "pong" || kind == "error", "{kind}");
        if kind == "pong" {
            assert!(message.is_text());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte odd: the rest is one text message (the JSON handling alone).
    if let Some((first, rest)) = data.split_first()
        && first & 1 == 1
    {
        check(Message::text(String::from_utf8_lossy(rest).into_owned()));
        check(Message::binary(rest.to_vec()));
        return;
    }
    let mut socket = WebSocket::from_raw_socket(
        Wire(Cursor::new(data.to_vec())),
        Role::Server,
        Some(socket_config()),
    );
    for _ in 0..64 {
        let Ok(message) = socket.read() else { break };
        match &message {
            Message::Text(text) => assert!(text.len() <= MAX_INBOUND),
            Message::Binary(bytes) => assert!(bytes.len() <= MAX_INBOUND),
            Message::Frame(_) => continue,
            _ => {}
        }
        check(message);
    }
});
