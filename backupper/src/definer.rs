//! A dump's views, triggers, routines and events name the account that defined them
//! (`DEFINER=`site_12`@`%``). Imported as another account (a restore's new user, a clone's
//! own), such a statement needs SUPER, which a site's user does not have and must not: the
//! definer is rewritten to `CURRENT_USER`, the account importing. Everything else passes
//! through untouched, as it streams.

use std::io::{self, Write};

/// The statements that carry a definer start a line with one of these (as mariadb-dump and
/// mysqldump write them).
const STARTS: [&[u8]; 4] = [
    b"/*!50003 CREATE*/ /*!50017 DEFINER=",
    b"/*!50013 DEFINER=",
    b"/*!50106 CREATE*/ /*!50117 DEFINER=",
    b"CREATE DEFINER=",
];

/// How much of a line is looked at: enough for any definer (user and host are at most 80
/// and 255 characters, quoted).
const HEAD: usize = 1024;

pub struct DefinerFilter<W> {
    inner: W,
    /// The start of the current line, until it is long enough (or ends) to decide on.
    head: Vec<u8>,
    /// The rest of the current line passes as it comes.
    passing: bool,
}

impl<W: Write> DefinerFilter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            head: Vec::with_capacity(HEAD),
            passing: false,
        }
    }

    pub fn into_inner(mut self) -> io::Result<W> {
        self.flush_head()?;
        Ok(self.inner)
    }

    fn flush_head(&mut self) -> io::Result<()> {
        if !self.head.is_empty() {
            let line = rewrite(&self.head);
            self.inner.write_all(&line)?;
            self.head.clear();
        }
        Ok(())
    }
}

/// `DEFINER=`user`@`host`` (or unquoted, or 'quoted') → `DEFINER=CURRENT_USER`, in a line that
/// starts as a definer statement does.
fn rewrite(line: &[u8]) -> Vec<u8> {
    if !STARTS.iter().any(|s| line.starts_with(s)) {
        return line.to_vec();
    }
    let Some(at) = find(line, b"DEFINER=") else {
        return line.to_vec();
    };
    let start = at + b"DEFINER=".len();
    let Some(user_end) = quoted_end(line, start) else {
        return line.to_vec();
    };
    if line.get(user_end) != Some(&b'@') {
        return line.to_vec();
    }
    let Some(host_end) = quoted_end(line, user_end + 1) else {
        return line.to_vec();
    };
    let mut out = Vec::with_capacity(line.len());
    out.extend_from_slice(&line[..start]);
    out.extend_from_slice(b"CURRENT_USER");
    out.extend_from_slice(&line[host_end..]);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An account's name or host as a definer may hold it: nothing that could end a string, a
/// comment or a statement, so that removing it cannot change how the client splits the dump.
fn plain_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'%' | b'.' | b'-' | b':')
}

/// The end (exclusive) of a `quoted`, 'quoted' or bare name starting at `i`; `None` (nothing
/// rewritten) for anything but a plain name.
fn quoted_end(line: &[u8], i: usize) -> Option<usize> {
    let q = *line.get(i)?;
    if q == b'`' || q == b'\'' || q == b'"' {
        let len = line[i + 1..]
            .iter()
            .take_while(|b| plain_name_byte(**b))
            .count();
        let close = i + 1 + len;
        (len > 0 && line.get(close) == Some(&q)).then_some(close + 1)
    } else {
        let len = line[i..]
            .iter()
            .take_while(|b| plain_name_byte(**b))
            .count();
        (len > 0).then_some(i + len)
    }
}

impl<W: Write> Write for DefinerFilter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.passing {
                match rest.iter().position(|b| *b == b'\n') {
                    Some(n) => {
                        self.inner.write_all(&rest[..=n])?;
                        rest = &rest[n + 1..];
                        self.passing = false;
                    }
                    None => {
                        self.inner.write_all(rest)?;
                        rest = &[];
                    }
                }
                continue;
            }
            let room = HEAD - self.head.len();
            let take = match rest.iter().take(room).position(|b| *b == b'\n') {
                Some(n) => n + 1,
                None => rest.len().min(room),
            };
            self.head.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            let ended = self.head.last() == Some(&b'\n');
            if ended || self.head.len() == HEAD {
                self.flush_head()?;
                self.passing = !ended;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(input: &[u8], piece: usize) -> Vec<u8> {
        let mut f = DefinerFilter::new(Vec::new());
        for chunk in input.chunks(piece) {
            f.write_all(chunk).unwrap();
        }
        f.into_inner().unwrap()
    }

    #[test]
    fn definers_become_the_importing_account_and_nothing_else_changes() {
        let dump = b"INSERT INTO t VALUES ('DEFINER=`x`@`y`');\n\
/*!50003 CREATE*/ /*!50017 DEFINER=`site_1`@`%`*/ /*!50003 TRIGGER t BEFORE UPDATE ON x FOR EACH ROW SET NEW.a = 1 */;;\n\
/*!50013 DEFINER=`odd`@`localhost` SQL SECURITY DEFINER */\n\
/*!50013 DEFINER=`x'; DROP`@`y` */\n\
CREATE DEFINER=`site_1`@`%` PROCEDURE p() SELECT 1 ;;\n\
plain line without end";
        let want = b"INSERT INTO t VALUES ('DEFINER=`x`@`y`');\n\
/*!50003 CREATE*/ /*!50017 DEFINER=CURRENT_USER*/ /*!50003 TRIGGER t BEFORE UPDATE ON x FOR EACH ROW SET NEW.a = 1 */;;\n\
/*!50013 DEFINER=CURRENT_USER SQL SECURITY DEFINER */\n\
/*!50013 DEFINER=`x'; DROP`@`y` */\n\
CREATE DEFINER=CURRENT_USER PROCEDURE p() SELECT 1 ;;\n\
plain line without end";
        for piece in [1, 3, 7, 64, 4096] {
            assert_eq!(filtered(dump, piece), want.to_vec(), "in pieces of {piece}");
        }
        // A long line (an extended INSERT) passes whole.
        let long = [b"INSERT ".to_vec(), vec![b'x'; 100_000], b"\n".to_vec()].concat();
        assert_eq!(filtered(&long, 8192), long);
    }
}
