//! `berth run -t`: a real terminal, driven from a test pty like a user.

use std::time::Duration;

use berth_e2e::{descendants, require_root, wait_until, Berth, Pty};
use nix::sys::termios::LocalFlags;

/// Long enough for a slow VM; a passing run takes milliseconds per step.
const STEP: Duration = Duration::from_secs(20);

#[test]
fn interactive_shell_on_a_terminal() {
    require_root!();
    let berth = Berth::new();
    // Build the image first so that the session below only runs the shell.
    berth.run_ok(["run", "--rm", "busybox", "true"]);

    let mut pty = Pty::new(40, 120);
    let before = pty.termios();
    assert!(
        before.local_flags.contains(LocalFlags::ICANON),
        "a new pty starts cooked"
    );
    let mut berth_process = pty.spawn(berth.cmd(["run", "-it", "--name", "term", "busybox", "sh"]));
    let berth_pid = berth_process.0.id() as i32;
    pty.expect("# ", STEP);

    // berth put the user's terminal in raw mode, so keys reach the container.
    let during = pty.termios();
    assert!(
        !during.local_flags.contains(LocalFlags::ICANON)
            && !during.local_flags.contains(LocalFlags::ECHO),
        "the user's terminal is not in raw mode while the container runs: {:?}",
        during.local_flags
    );

    pty.send(b"tty; echo $TERM\r");
    pty.expect("/dev/pts/0", STEP);
    pty.expect("xterm", STEP);

    pty.send(b"stty size\r");
    pty.expect("40 120", STEP);

    // A resize of the user's terminal reaches the container's (SIGWINCH).
    pty.set_window_size(50, 100);
    let resized = wait_until(STEP, || {
        pty.send(b"stty size\r");
        pty.settle(Duration::from_millis(100));
        pty.transcript().contains("50 100")
    });
    assert!(
        resized,
        "window size change not passed on:\n{}",
        pty.transcript()
    );
    pty.expect("50 100", STEP);

    // Ctrl-C interrupts the foreground command in the container, not berth.
    pty.send(b"sleep 99\r");
    let started = wait_until(STEP, || {
        descendants(berth_pid)
            .iter()
            .any(|(_, cmd)| cmd == "sleep 99")
    });
    assert!(started, "`sleep 99` never started:\n{}", pty.transcript());
    pty.send(b"\x03");
    pty.send(b"echo back-$((20+22))\r");
    pty.expect("back-42", Duration::from_secs(10));
    assert!(
        !descendants(berth_pid)
            .iter()
            .any(|(_, cmd)| cmd == "sleep 99"),
        "sleep survived Ctrl-C"
    );

    pty.send(b"exit 5\r");
    let status = berth_process.wait(STEP);
    assert_eq!(
        status.code(),
        Some(5),
        "berth's exit code:\n{}",
        pty.transcript()
    );
    let after = pty.termios();
    assert_eq!(
        after, before,
        "berth did not restore the terminal's attributes"
    );
    assert_eq!(berth.inspect("term")["exit_code"], 5);
    berth.assert_clean();
}

/// docker: with `-t` and without `-i`, the container's stdin, stdout and
/// stderr are all the terminal (only the user's keys are not passed on),
/// so `docker run -t busybox tty` prints /dev/pts/0 and `stty size` works.
#[test]
fn terminal_without_interactive() {
    require_root!();
    let berth = Berth::new();
    let mut pty = Pty::new(40, 120);
    let before = pty.termios();
    let mut run = pty.spawn(berth.cmd([
        "run",
        "-t",
        "busybox",
        "sh",
        "-c",
        "tty; stty size; echo TERM=$TERM; ls -l /proc/self/fd/1",
    ]));
    let status = run.wait(STEP);
    pty.settle(Duration::from_millis(200));
    let shown = pty.transcript();
    assert_eq!(status.code(), Some(0), "{shown}");
    // Without -i berth leaves the user's terminal cooked (as docker does),
    // so its own output processing may add a carriage return: compare
    // without them.
    let lines = shown.replace('\r', "");
    for want in ["/dev/pts/0\n", "40 120\n", "TERM=xterm\n", "-> /dev/pts/0"] {
        assert!(
            lines.contains(want),
            "{want:?} missing from the terminal:\n{shown}"
        );
    }
    assert_eq!(pty.termios(), before, "terminal attributes changed");
    berth.assert_clean();
}
