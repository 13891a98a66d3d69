//! Frames: how protocol messages travel. A frame is a 4-byte little-endian length followed by that many
//! bytes of MessagePack. The [`Transport`] trait hides what carries them — a worker's stdin/stdout
//! today, a socket later — so the client and the worker loop don't care.

use super::protocol::MAX_FRAME_BYTES;
use std::io::{self, Read, Write};

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
}
