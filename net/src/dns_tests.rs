use super::*;

const HOSTS: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
# a comment\n\
10.85.0.2\tc0ffee web\n\
10.85.0.3\tlater cache kv\n\
fd00::3\tlater\n\
not-an-address\tbroken\n";

/// A query message: id 0x1234, RD set, one question.
fn query(name: &str, kind: u16) -> Vec<u8> {
    let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    message.extend(encode_name(name));
    message.extend_from_slice(&kind.to_be_bytes());
    message.extend_from_slice(&CLASS_IN.to_be_bytes());
    message
}

/// (rcode, answer records' data) of a reply, checked for the header
/// fields every reply must have.
fn decode(message: &[u8], asked: &[u8]) -> (u8, Vec<Vec<u8>>) {
    assert_eq!(&message[..2], &asked[..2], "the id is echoed");
    assert!(message[2] & 0x80 != 0, "QR is set");
    assert_eq!(message[2] & 0x01, asked[2] & 0x01, "RD is echoed");
    assert_eq!(u16::from_be_bytes([message[4], message[5]]), 1);
    let question = &asked[12..];
    assert_eq!(
        &message[12..12 + question.len()],
        question,
        "the question is echoed"
    );
    let count = u16::from_be_bytes([message[6], message[7]]);
    let mut position = 12 + question.len();
    let mut records = Vec::new();
    for _ in 0..count {
        assert_eq!(&message[position..position + 2], &[0xc0, 12]);
        let ttl = u32::from_be_bytes(message[position + 6..position + 10].try_into().unwrap());
        assert_eq!(ttl, ANSWER_TTL);
        let len = usize::from(u16::from_be_bytes([
            message[position + 10],
            message[position + 11],
        ]));
        records.push(message[position + 12..position + 12 + len].to_vec());
        position += 12 + len;
    }
    assert_eq!(position, message.len(), "nothing after the answers");
    (message[3] & 0x0f, records)
}

const NAMES: LocalNames<'static> = LocalNames {
    hosts: HOSTS,
    search_domains: &[],
};

fn answered(message: &[u8]) -> (u8, Vec<Vec<u8>>) {
    match reply(message, &NAMES, true) {
        Reply::Answer(answer) => decode(&answer, message),
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn names_in_the_hosts_file_get_their_addresses_in_any_case() {
    for name in ["later", "CACHE", "kv."] {
        let (rcode, records) = answered(&query(name.trim_end_matches('.'), TYPE_A));
        assert_eq!(rcode, 0);
        assert_eq!(records, vec![vec![10, 85, 0, 3]], "{name}");
    }
    let (rcode, records) = answered(&query("later", TYPE_AAAA));
    assert_eq!(rcode, 0);
    let v6: std::net::Ipv6Addr = "fd00::3".parse().unwrap();
    assert_eq!(records, vec![v6.octets().to_vec()]);
}

#[test]
fn names_are_answered_under_the_search_domains_too() {
    let domains = vec!["corp.test".to_owned()];
    let names = LocalNames {
        hosts: HOSTS,
        search_domains: &domains,
    };
    let asked = query("later.corp.test", TYPE_A);
    let Reply::Answer(answer) = reply(&asked, &names, true) else {
        panic!("later.corp.test is later");
    };
    assert_eq!(decode(&answer, &asked), (0, vec![vec![10, 85, 0, 3]]));
    for other in ["later.other.test", "corp.test", "xlater.corp.test"] {
        assert_eq!(
            reply(&query(other, TYPE_A), &names, true),
            Reply::Forward,
            "{other}"
        );
    }
}

#[test]
fn a_name_without_an_address_of_the_family_gets_an_empty_answer_not_a_forward() {
    let (rcode, records) = answered(&query("web", TYPE_AAAA));
    assert_eq!((rcode, records.len()), (0, 0));
    let (rcode, records) = answered(&query("web", 16 /* TXT */));
    assert_eq!((rcode, records.len()), (0, 0));
}

#[test]
fn reverse_lookups_of_hosts_addresses_get_the_first_name() {
    let (rcode, records) = answered(&query("3.0.85.10.in-addr.arpa", TYPE_PTR));
    assert_eq!(rcode, 0);
    assert_eq!(records, vec![encode_name("later")]);
    assert_eq!(
        reply(&query("9.0.85.10.in-addr.arpa", TYPE_PTR), &NAMES, true),
        Reply::Forward
    );
}

#[test]
fn other_names_are_forwarded_or_refused_without_upstreams() {
    assert_eq!(
        reply(&query("example.org", TYPE_A), &NAMES, true),
        Reply::Forward
    );
    // A malformed line's "name" is no name.
    assert_eq!(
        reply(&query("broken", TYPE_A), &NAMES, true),
        Reply::Forward
    );
    let asked = query("example.org", TYPE_A);
    let Reply::Answer(refused) = reply(&asked, &NAMES, false) else {
        panic!("an internal network refuses");
    };
    assert_eq!(decode(&refused, &asked), (RCODE_REFUSED, Vec::new()));
}

#[test]
fn hostile_and_odd_messages_never_panic_and_get_no_forward() {
    assert_eq!(reply(&[], &NAMES, true), Reply::Drop);
    assert_eq!(reply(&[0x12; 11], &NAMES, true), Reply::Drop);
    // A response is not answered (no reflection loops).
    let mut response = query("web", TYPE_A);
    response[2] |= 0x80;
    assert_eq!(reply(&response, &NAMES, true), Reply::Drop);
    // Two questions, a compression pointer, a truncated name, a label
    // running past the end: FORMERR with the bare header.
    let mut two = query("web", TYPE_A);
    two[5] = 2;
    let mut pointer = query("web", TYPE_A);
    pointer[12] = 0xc0;
    let truncated = query("web", TYPE_A)[..14].to_vec();
    let mut long_label = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63];
    long_label.extend_from_slice(b"abc");
    for message in [two, pointer, truncated, long_label] {
        let Reply::Answer(answer) = reply(&message, &NAMES, true) else {
            panic!("FORMERR expected for {message:?}");
        };
        assert_eq!(answer.len(), 12);
        assert_eq!(&answer[..2], &message[..2]);
        assert_eq!(answer[3] & 0x0f, RCODE_FORMERR);
    }
    // Every prefix of a good query, and garbage: no panic.
    let good = query("a-rather-long-name.example.org", TYPE_AAAA);
    for len in 0..good.len() {
        let _ = reply(&good[..len], &NAMES, true);
    }
    let mut seed = 0x9e37_79b9_u32;
    for _ in 0..2000 {
        let len = (seed % 80) as usize;
        let mut message = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            message.push(seed as u8);
        }
        let _ = reply(&message, &NAMES, true);
    }
}

#[test]
fn a_served_socket_answers_names_live_and_relays_the_rest_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let hosts_file = dir.path().join("hosts");
    std::fs::write(&hosts_file, HOSTS).unwrap();
    // A fake upstream: answers every query with its own canned reply.
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream_address = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok((len, from)) = upstream.recv_from(&mut buffer) {
            let mut answer = buffer[..len].to_vec();
            answer[2] |= 0x80;
            answer.extend_from_slice(b"upstream");
            let _ = upstream.send_to(&answer, from);
        }
    });
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = socket.local_addr().unwrap();
    let serving = Responder::new(socket, &hosts_file, vec![upstream_address])
        .spawn()
        .unwrap();

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.connect(server).unwrap();
    let ask = |message: &[u8]| {
        client.send(message).unwrap();
        let mut buffer = [0u8; 512];
        let len = client.recv(&mut buffer).unwrap();
        buffer[..len].to_vec()
    };
    let asked = query("web", TYPE_A);
    assert_eq!(decode(&ask(&asked), &asked), (0, vec![vec![10, 85, 0, 2]]));
    // The file changes (a container joined): the next answer has it.
    std::fs::write(&hosts_file, format!("{HOSTS}10.85.0.4\tnewcomer\n")).unwrap();
    let asked = query("newcomer", TYPE_A);
    assert_eq!(decode(&ask(&asked), &asked), (0, vec![vec![10, 85, 0, 4]]));
    // Anything else: the upstream's reply, relayed unchanged.
    let asked = query("example.org", TYPE_A);
    let relayed = ask(&asked);
    assert!(relayed.ends_with(b"upstream"), "{relayed:?}");
    assert_eq!(&relayed[..2], &asked[..2]);

    // Stopped: the thread ends (the drop returns) and no one answers.
    let started = std::time::Instant::now();
    drop(serving);
    assert!(started.elapsed() < Duration::from_secs(2));
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    client.send(&query("web", TYPE_A)).unwrap();
    assert!(
        client.recv(&mut [0u8; 512]).is_err(),
        "answered after the stop"
    );
}

#[test]
fn an_upstream_that_never_answers_gives_servfail() {
    let dir = tempfile::tempdir().unwrap();
    let hosts_file = dir.path().join("hosts");
    std::fs::write(&hosts_file, HOSTS).unwrap();
    // Bound and silent.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = socket.local_addr().unwrap();
    let _serving = Responder::new(socket, &hosts_file, vec![silent.local_addr().unwrap()])
        .spawn()
        .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let asked = query("example.org", TYPE_A);
    client.send_to(&asked, server).unwrap();
    // A local name is answered meanwhile: the relay does not block it.
    let local = query("web", TYPE_A);
    client.send_to(&local, server).unwrap();
    let mut buffer = [0u8; 512];
    let len = client.recv(&mut buffer).unwrap();
    assert_eq!(
        decode(&buffer[..len], &local),
        (0, vec![vec![10, 85, 0, 2]])
    );
    let len = client.recv(&mut buffer).unwrap();
    assert_eq!(decode(&buffer[..len], &asked), (RCODE_SERVFAIL, Vec::new()));
    drop(silent);
}

#[test]
fn a_huge_or_binary_hosts_file_is_read_only_up_to_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hosts");
    let mut text = String::from("10.85.0.2\tweb\n\u{0}\u{ff}\n");
    text.push_str(&"#".repeat(2 << 20));
    text.push_str("\n10.85.0.9\tbeyond\n");
    std::fs::write(&path, text).unwrap();
    let read = read_hosts(&path);
    assert_eq!(read.len() as u64, MAX_HOSTS_FILE);
    assert!(addresses_of(&read, "web").is_some());
    assert!(addresses_of(&read, "beyond").is_none());
    assert_eq!(read_hosts(&dir.path().join("missing")), "");
}
