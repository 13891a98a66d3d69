//! Frames: how protocol messages travel. A frame is a 4-byte little-endian length followed by that many
//! bytes of MessagePack. The [`Transport`] trait hides what carries them — a worker's stdin/stdout
//! today, a socket later — so the client and the worker loop don't care.

use crate::messages::MAX_FRAME_BYTES;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Something that carries whole frames both ways.
pub trait Transport: Send {
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// The next frame; `Ok(None)` at a clean end of stream (the other side closed between frames).
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>>;
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds the limit of {MAX_FRAME_BYTES}", frame.len()),
        ));
    }
    w.write_all(&(frame.len() as u32).to_le_bytes())?;
    w.write_all(frame)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` if the stream ends before its first byte. A length over
/// [`MAX_FRAME_BYTES`] is refused before anything is allocated; a stream ending inside a frame is an
/// `UnexpectedEof` error.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a frame length",
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "frame length {n} exceeds the limit of {MAX_FRAME_BYTES} (not a landscaped worker stream?)"
            ),
        ));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// Frames over a pair of byte streams (a child's stdout/stdin, a socket's halves, stdin/stdout).
pub struct StreamTransport<R, W> {
    reader: R,
    writer: W,
}

impl<R: Read + Send, W: Write + Send> StreamTransport<R, W> {
    pub fn new(reader: R, writer: W) -> Self {
        StreamTransport { reader, writer }
    }
}

impl<R: Read + Send, W: Write + Send> Transport for StreamTransport<R, W> {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        write_frame(&mut self.writer, frame)
    }
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        read_frame(&mut self.reader)
    }
}

/// How long a peer over TCP may go without sending a byte once a frame has begun.
pub const FRAME_STALL: Duration = Duration::from_secs(10);

/// How often a [`StallGuard`] looks at the clock while its peer is silent.
const STALL_TICK: Duration = Duration::from_millis(500);

/// A TCP connection read as frames, where silence between frames is fine (a worker evaluating for
/// minutes) but silence inside one is not: once a frame has begun, a gap of `stall` without a byte is a
/// `TimedOut` error (a peer that sent half a frame and froze, or whose node went away mid-frame).
pub struct StallGuard {
    inner: TcpStream,
    stall: Duration,
    /// Bytes of the current frame's length read so far (0..4), and its body bytes still to come.
    head: [u8; 4],
    head_got: usize,
    body_left: usize,
    last_byte: Instant,
}

impl StallGuard {
    /// Sets a short read timeout on `inner` (a clock tick; the socket's other handles share it).
    pub fn new(inner: TcpStream, stall: Duration) -> StallGuard {
        let _ = inner.set_read_timeout(Some(STALL_TICK.min(stall).max(Duration::from_millis(1))));
        StallGuard { inner, stall, head: [0; 4], head_got: 0, body_left: 0, last_byte: Instant::now() }
    }

    fn between_frames(&self) -> bool {
        self.head_got == 0 && self.body_left == 0
    }

    /// Follows the frame boundaries through `bytes` just read.
    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            self.head[self.head_got] = bytes[0];
            self.head_got += 1;
            bytes = &bytes[1..];
            if self.head_got == 4 {
                self.head_got = 0;
                self.body_left = u32::from_le_bytes(self.head) as usize;
            }
        }
    }
}

impl Read for StallGuard {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    if n > 0 {
                        if self.between_frames() {
                            self.last_byte = Instant::now();
                        }
                        self.advance(&buf[..n]);
                        self.last_byte = Instant::now();
                    }
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if !self.between_frames() && self.last_byte.elapsed() >= self.stall {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "no byte for {} s in the middle of a frame (the peer stalled or went away)",
                                self.stall.as_secs_f64()
                            ),
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"abc").unwrap();
        write_frame(&mut buf, b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"abc");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"");
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn truncated_and_oversized_frames_are_errors() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"abcdef").unwrap();
        buf.truncate(7);
        assert_eq!(read_frame(&mut &buf[..]).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(read_frame(&mut &[1u8, 0][..]).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let huge = (u32::MAX).to_le_bytes();
        let e = read_frame(&mut &huge[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
    }

    #[test]
    fn a_frame_stalled_halfway_is_an_error_and_silence_between_frames_is_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut peer = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        let mut g = StallGuard::new(s, Duration::from_millis(600));
        // Silence between frames (longer than the stall limit) is waited through.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            write_frame(&mut peer, b"hello").unwrap();
            // Half of the next frame's length, then nothing.
            peer.write_all(&[9, 0]).unwrap();
            peer
        });
        assert_eq!(read_frame(&mut g).unwrap().unwrap(), b"hello");
        let t = Instant::now();
        let e = read_frame(&mut g).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("middle of a frame"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        drop(sender.join().unwrap());
    }
}
