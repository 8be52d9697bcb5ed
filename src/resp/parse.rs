//! Reading commands off a connection's input: arrays of bulk strings (what every client
//! sends) on a fast path of their own, anything else through the `redis-protocol` codec, and
//! inline commands (`PING\r\n`, as telnet sends them). Sizes are checked before anything is
//! allocated for them.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame as Frame;

/// Most arguments one command may carry (Redis allows more; nobody sends them).
pub const MAX_ARGS: usize = 1024 * 1024;
/// Room for a command's framing and key on top of the largest value.
pub const FRAME_SLACK: usize = 64 * 1024;

/// Why the input is not a command: the connection is answered with this and closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl From<String> for ParseError {
    fn from(message: String) -> Self {
        ParseError(message)
    }
}

/// What [`next_command`] took off the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A whole command, its name first.
    Command(Vec<Bytes>),
    /// A command with an argument declared longer than the limit: refused as soon as its
    /// header arrived. The rest of it is to be skipped ([`Skipping`]), so the connection goes
    /// on with the command after it.
    Oversized {
        /// The declared length.
        len: usize,
        /// The largest argument this node takes.
        max: usize,
        /// What is left of the command on the wire.
        skip: Skipping,
    },
}

/// The rest of a refused command, still to arrive and be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipping {
    /// Bytes left of the current argument, its CRLF included.
    bytes: usize,
    /// Arguments after it, each a `$len` header and its bytes.
    args: usize,
}

impl Skipping {
    /// Drops what arrived of the refused command; `true` once all of it is gone.
    pub fn advance(&mut self, input: &mut BytesMut) -> Result<bool, ParseError> {
        loop {
            let take = self.bytes.min(input.len());
            let _ = input.split_to(take);
            self.bytes -= take;
            if self.bytes > 0 {
                return Ok(false);
            }
            if self.args == 0 {
                return Ok(true);
            }
            let Some(end) = input.iter().take(24).position(|&b| b == b'\n') else {
                return if input.len() >= 24 {
                    Err(ParseError("invalid bulk header".into()))
                } else {
                    Ok(false)
                };
            };
            let len = std::str::from_utf8(&input[..end])
                .ok()
                .and_then(|h| h.strip_prefix('$'))
                .and_then(|h| h.trim_end_matches('\r').parse::<usize>().ok())
                .ok_or_else(|| ParseError("invalid bulk length".into()))?;
            let _ = input.split_to(end + 1);
            self.bytes = len.saturating_add(2);
            self.args -= 1;
        }
    }
}

/// Takes the next command off `input`: `Ok(None)` when more bytes are needed. An argument
/// declared longer than `max_value` (or a key's limit, if larger) is refused as soon as its
/// header arrives ([`Next::Oversized`]); a command longer than `max_frame` in all, or input
/// that is not RESP, is an error that ends the connection.
pub fn next_command(
    input: &mut BytesMut,
    max_frame: usize,
    max_value: usize,
) -> Result<Option<Next>, ParseError> {
    let max_bulk = max_value.max(crate::ops::MAX_KEY_BYTES);
    if input.first() == Some(&b'*') {
        check_header(input)?;
        if let BulkArray::Awaiting {
            len,
            start,
            args_after,
        } = walk_bulk_array(input, |_| ())
            && len > max_bulk
        {
            let _ = input.split_to(start);
            return Ok(Some(Next::Oversized {
                len,
                max: max_bulk,
                skip: Skipping {
                    bytes: len.saturating_add(2),
                    args: args_after,
                },
            }));
        }
    }
    Ok(parse_next(input, max_frame)?.map(Next::Command))
}

fn parse_next(input: &mut BytesMut, max_frame: usize) -> Result<Option<Vec<Bytes>>, String> {
    // Blank inline lines are skipped here, in a loop: a client's thousands of newlines must
    // not each cost a level of recursion (they overflowed a worker's stack and aborted the
    // node; found by fuzzing).
    loop {
        if input.is_empty() {
            return Ok(None);
        }
        if input[0] == b'*' {
            break;
        }
        match inline_command(input, max_frame)? {
            Some(args) if args.is_empty() => continue,
            found => return Ok(found),
        }
    }
    check_header(input)?;
    match walk_bulk_array(input, |_| ()) {
        BulkArray::Complete { len, count } => {
            // The command's own copy, of its exact size: a value stored from it keeps only
            // these bytes alive, not the read buffer it arrived in (a slice of that pinned a
            // whole 16 KiB or larger buffer per surviving key, several times the data).
            let frame = Bytes::copy_from_slice(&input.split_to(len));
            let mut args = Vec::with_capacity(count);
            walk_bulk_array(&frame, |arg| args.push(frame.slice(arg)));
            return Ok(Some(args));
        }
        BulkArray::Incomplete | BulkArray::Awaiting { .. } if input.len() > max_frame => {
            return Err(too_long(max_frame));
        }
        BulkArray::Incomplete | BulkArray::Awaiting { .. } => return Ok(None),
        // Anything else (other frame types inside, odd lengths) is the codec's to judge.
        BulkArray::Other => {}
    }
    codec_command(input, max_frame)
}

/// [`next_command`] by redis-protocol's decoder: any array, checked item by item.
fn codec_command(input: &mut BytesMut, max_frame: usize) -> Result<Option<Vec<Bytes>>, String> {
    match decode_bytes_mut(input) {
        Ok(Some((frame, _, _))) => match frame {
            Frame::Array(items) => items
                .into_iter()
                .map(|f| match f {
                    Frame::BulkString(b) | Frame::SimpleString(b) => Ok(b),
                    Frame::Integer(i) => Ok(Bytes::from(i.to_string())),
                    other => Err(format!("expected bulk strings, got {other:?}")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            other => Err(format!("expected an array of bulk strings, got {other:?}")),
        },
        Ok(None) if input.len() > max_frame => Err(too_long(max_frame)),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn too_long(max_frame: usize) -> String {
    format!(
        "a command of more than {max_frame} bytes; values may have at most {} bytes",
        max_frame.saturating_sub(FRAME_SLACK)
    )
}

/// What [`walk_bulk_array`] found at the start of the input.
#[derive(Debug, PartialEq, Eq)]
enum BulkArray {
    /// A whole command of `len` bytes and `count` arguments.
    Complete { len: usize, count: usize },
    /// The start of one: more bytes are needed.
    Incomplete,
    /// The start of one, with an argument still arriving.
    Awaiting {
        /// Its declared length.
        len: usize,
        /// Where its bytes start.
        start: usize,
        /// How many arguments follow it.
        args_after: usize,
    },
    /// Not an array of bulk strings.
    Other,
}

/// Walks a command in the shape every client sends (`*N` then N bulk strings), handing each
/// argument's byte range to `arg`. The common case, read without the codec: redis-protocol
/// builds a frame tree first, about 2,200 instructions per `SET` (a tenth of a three-node
/// coordinator's; README, Benchmarks). Everything else goes to the codec.
fn walk_bulk_array(input: &[u8], mut arg: impl FnMut(std::ops::Range<usize>)) -> BulkArray {
    /// A decimal length after `prefix` at `at`, ended by CRLF: (value, where the line ends).
    fn length(input: &[u8], at: usize, prefix: u8) -> Result<(usize, usize), BulkArray> {
        match input.get(at) {
            None => return Err(BulkArray::Incomplete),
            Some(&b) if b != prefix => return Err(BulkArray::Other),
            Some(_) => {}
        }
        // At most 11 digits: no overflow, and longer than any frame this node accepts.
        let mut value: u64 = 0;
        let mut i = at + 1;
        loop {
            match input.get(i) {
                None => return Err(BulkArray::Incomplete),
                Some(b'\r') if i > at + 1 => break,
                Some(&d) if d.is_ascii_digit() && i < at + 12 => {
                    value = value * 10 + u64::from(d - b'0');
                }
                Some(_) => return Err(BulkArray::Other),
            }
            i += 1;
        }
        let value = usize::try_from(value).map_err(|_| BulkArray::Other)?;
        match input.get(i + 1) {
            None => Err(BulkArray::Incomplete),
            Some(b'\n') => Ok((value, i + 2)),
            Some(_) => Err(BulkArray::Other),
        }
    }
    let walk = |arg: &mut dyn FnMut(std::ops::Range<usize>)| -> Result<(usize, usize), BulkArray> {
        let (count, mut at) = length(input, 0, b'*')?;
        if count == 0 || count > MAX_ARGS {
            return Err(BulkArray::Other);
        }
        for i in 0..count {
            let (len, start) = length(input, at, b'$')?;
            let end = start.checked_add(len).ok_or(BulkArray::Other)?;
            let after = end.checked_add(2).ok_or(BulkArray::Other)?;
            match input.get(end..after) {
                None => {
                    return Err(BulkArray::Awaiting {
                        len,
                        start,
                        args_after: count - i - 1,
                    });
                }
                Some(b"\r\n") => {}
                Some(_) => return Err(BulkArray::Other),
            }
            arg(start..end);
            at = after;
        }
        Ok((at, count))
    };
    match walk(&mut arg) {
        Ok((len, count)) => BulkArray::Complete { len, count },
        Err(found) => found,
    }
}

/// Refuses an array header that announces more arguments than any command has, before the
/// decoder reserves room for them.
fn check_header(input: &[u8]) -> Result<(), String> {
    let Some(end) = input.iter().take(24).position(|&b| b == b'\r') else {
        return if input.len() > 24 {
            Err("array header too long".into())
        } else {
            Ok(())
        };
    };
    let count: i64 = std::str::from_utf8(&input[1..end])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "invalid multibulk length".to_string())?;
    if count > MAX_ARGS as i64 {
        return Err(format!(
            "invalid multibulk length ({count} arguments; at most {MAX_ARGS})"
        ));
    }
    Ok(())
}

/// A command typed as one line of words (telnet, `nc`).
/// The inline command at the start of `input`: `None` until its line is complete, no
/// arguments for a blank line (taken off the input).
fn inline_command(input: &mut BytesMut, max_frame: usize) -> Result<Option<Vec<Bytes>>, String> {
    let Some(end) = input.iter().position(|&b| b == b'\n') else {
        return if input.len() > max_frame {
            Err("inline command too long".into())
        } else {
            Ok(None)
        };
    };
    let line = input.split_to(end + 1);
    let line = std::str::from_utf8(&line)
        .map_err(|_| "inline commands must be UTF-8".to_string())?
        .trim();
    let args: Vec<Bytes> = line
        .split_whitespace()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect();
    Ok(Some(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_cost_no_stack() {
        // Found by fuzzing: each blank inline line was a level of recursion, and a few
        // thousand overflowed a worker's stack. A 64 KiB stack now takes a hundred thousand.
        let parsed = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| {
                let mut input = BytesMut::from(&b"\r\n".repeat(100_000)[..]);
                input.extend_from_slice(b"PING\r\n");
                command(&mut input)
            })
            .expect("thread")
            .join()
            .expect("no stack overflow");
        assert_eq!(parsed, Ok(Some(vec![Bytes::from_static(b"PING")])));
    }

    /// The command [`next_command`] reads, if it is one.
    fn command(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, String> {
        match next_command(buf, 1 << 20, 1 << 20).map_err(|e| e.0)? {
            Some(Next::Command(args)) => Ok(Some(args)),
            Some(other) => Err(format!("{other:?}")),
            None => Ok(None),
        }
    }

    fn parse(bytes: &[u8]) -> Result<Option<Vec<Bytes>>, String> {
        command(&mut BytesMut::from(bytes))
    }

    #[test]
    fn a_bulk_declared_too_long_is_refused_before_it_arrives_and_skipped() {
        let mut buf = BytesMut::from(&b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\nxx"[..]);
        let Ok(Some(Next::Oversized { len, mut skip, .. })) = next_command(&mut buf, 1 << 20, 1500)
        else {
            panic!("refused at once")
        };
        assert_eq!(len, 2000);
        // The rest arrives in pieces: the value, then an option and its argument; then the
        // next command reads as usual.
        assert_eq!(skip.advance(&mut buf), Ok(false));
        buf.extend_from_slice(&vec![b'x'; 1998]);
        buf.extend_from_slice(b"\r\n$2\r\nE");
        assert_eq!(skip.advance(&mut buf), Ok(false));
        buf.extend_from_slice(b"X\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(skip.advance(&mut buf), Ok(true));
        assert_eq!(command(&mut buf), Ok(Some(vec![Bytes::from("PING")])));
        // Within the limit it waits for the rest.
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1400\r\nxx"[..]);
        assert_eq!(next_command(&mut buf, 1 << 20, 1500), Ok(None));
    }

    #[test]
    fn commands_parse_from_arrays_and_inline_lines_and_wait_for_more() {
        assert_eq!(
            parse(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap(),
            Some(vec![Bytes::from("GET"), Bytes::from("k")])
        );
        assert_eq!(parse(b"*2\r\n$3\r\nGET\r\n$1\r").unwrap(), None);
        // Arrays of bulk strings take the fast path; anything else is the codec's.
        let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let mut ranges = Vec::new();
        assert_eq!(
            walk_bulk_array(get, |r| ranges.push(r)),
            BulkArray::Complete {
                len: get.len(),
                count: 2
            }
        );
        assert_eq!(ranges, [8..11, 17..18]);
        assert_eq!(
            walk_bulk_array(&get[..12], |_| ()),
            BulkArray::Awaiting {
                len: 3,
                start: 8,
                args_after: 1
            }
        );
        assert_eq!(walk_bulk_array(&get[..6], |_| ()), BulkArray::Incomplete);
        assert_eq!(walk_bulk_array(b"*1\r\n:5\r\n", |_| ()), BulkArray::Other);
        assert_eq!(walk_bulk_array(b"*1\r\n$-1\r\n", |_| ()), BulkArray::Other);
        assert_eq!(
            parse(b"PING hello\r\n").unwrap(),
            Some(vec![Bytes::from("PING"), Bytes::from("hello")])
        );
        assert_eq!(parse(b"PIN").unwrap(), None);
        // Pipelined: the second command stays in the buffer for the next call.
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n"[..]);
        assert!(command(&mut buf).unwrap().is_some());
        assert!(command(&mut buf).unwrap().is_some());
        assert!(buf.is_empty());
    }

    /// What redis-protocol alone makes of `bytes`: the fast path must read the same.
    fn codec(bytes: &[u8]) -> Result<Option<Vec<Bytes>>, String> {
        check_header(bytes)?;
        codec_command(&mut BytesMut::from(bytes), 1 << 20)
    }

    proptest::proptest! {
        /// Every command, and every prefix of one, reads as the codec reads it; what follows a
        /// command stays in the buffer.
        #[test]
        fn the_fast_path_reads_commands_as_the_codec_does(
            args in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 1..6),
            cut in 0usize..400,
        ) {
            let mut wire = format!("*{}\r\n", args.len()).into_bytes();
            for a in &args {
                wire.extend(format!("${}\r\n", a.len()).as_bytes());
                wire.extend(a);
                wire.extend(b"\r\n");
            }
            let whole = wire.len();
            wire.extend(b"*1\r\n$4\r\nPING\r\n");
            let mut buf = BytesMut::from(&wire[..]);
            let parsed = command(&mut buf).expect("a command");
            let expected: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
            proptest::prop_assert_eq!(parsed, Some(expected));
            proptest::prop_assert_eq!(buf.len(), wire.len() - whole);
            let prefix = &wire[..cut.min(whole)];
            if prefix.is_empty() {
                return Ok(());
            }
            proptest::prop_assert_eq!(parse(prefix), codec(prefix));
        }

        /// Damaged input gets the codec's verdict.
        #[test]
        fn damaged_commands_read_as_the_codec_reads_them(
            mut wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..30),
            pos in 0usize..30,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let mut cmd = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n".to_vec();
            let at = pos % cmd.len();
            cmd[at] = byte;
            cmd.append(&mut wire);
            if cmd[0] == b'*' {
                proptest::prop_assert_eq!(parse(&cmd), codec(&cmd));
            }
        }
    }

    #[test]
    fn malformed_and_oversized_input_is_an_error_not_a_panic() {
        assert!(parse(b"*x\r\n").is_err());
        assert!(parse(b"*99999999999\r\n").is_err());
        assert!(parse(b"*1\r\n:5\r\n").is_ok());
        assert!(parse(b"*1\r\n*1\r\n$1\r\na\r\n").is_err());
        // A declared argument over the limit is refused before its bytes are read.
        let mut big = b"*2\r\n$3\r\nSET\r\n$9999999\r\n".to_vec();
        big.extend(vec![b'x'; 2 << 20]);
        let mut buf = BytesMut::from(&big[..]);
        assert!(matches!(
            next_command(&mut buf, 1 << 20, 1 << 20),
            Ok(Some(Next::Oversized { len: 9_999_999, .. }))
        ));
        // A command larger than a frame in all, of arguments each within the limit, is an error.
        let mut many = b"*3\r\n$3\r\nSET\r\n$1000\r\n".to_vec();
        many.extend(vec![b'x'; 1000]);
        many.extend(b"\r\n$1000\r\n");
        many.extend(vec![b'x'; 500]);
        let mut buf = BytesMut::from(&many[..]);
        assert!(next_command(&mut buf, 1200, 1000).is_err());
    }
}
