//! What `numapin serve` is told to keep: the warm pools (`NODE:PAGE:COUNTxCHUNK`, flags or a
//! JSON config), the service's settings, and the counters it reports.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ledger::Ledger;
use crate::units::{format_bytes, parse_size, NodeId, PageSize, ParseError};

/// One warm pool: `count` memory files of `chunk` bytes of `page_size` pages on `node`, kept
/// populated, zeroed and sealed. Written `NODE:PAGE:COUNTxCHUNK`, e.g. `0:2m:8x512MiB`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolTarget {
    /// The node.
    pub node: NodeId,
    /// The page size (concrete: 4k, 2m or 1g).
    #[serde(with = "page_text")]
    pub page_size: PageSize,
    /// Bytes per memory file (a request of exactly this size is served warm).
    #[serde(with = "size_text")]
    pub chunk: u64,
    /// How many to keep ready.
    pub count: u32,
}

mod size_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Size {
            N(u64),
            S(String),
        }
        match Size::deserialize(d)? {
            Size::N(n) => Ok(n),
            Size::S(s) => crate::units::parse_size(&s).map_err(serde::de::Error::custom),
        }
    }
}

mod page_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::units::PageSize;

    pub fn serialize<S: Serializer>(v: &PageSize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// `2m` as on the command line, or the serde name (`huge2m`) as in `status --json`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PageSize, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "base4k" => Ok(PageSize::Base4K),
            "transparent" => Ok(PageSize::Transparent),
            "huge2m" => Ok(PageSize::Huge2M),
            "huge1g" => Ok(PageSize::Huge1G),
            o => o.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl FromStr for PoolTarget {
    type Err = ParseError;
    fn from_str(s: &str) -> std::result::Result<Self, ParseError> {
        const SHAPE: &str = "expected NODE:PAGE:COUNTxSIZE, e.g. 0:2m:8x512MiB";
        let bad = |why: String| {
            let problem = if why.is_empty() {
                SHAPE.to_string()
            } else {
                format!("{SHAPE}: {why}")
            };
            ParseError::malformed("pool", s, problem)
        };
        let mut it = s.split(':');
        let (Some(n), Some(p), Some(cs), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad(String::new()));
        };
        let node = n
            .parse::<u32>()
            .map_err(|_| bad(format!("node {n:?} is not a number")))?;
        let page_size: PageSize = p.parse().map_err(|e: ParseError| bad(e.to_string()))?;
        if page_size.bytes().is_none() {
            return Err(bad("the page size must be concrete (4k, 2m, 1g)".into()));
        }
        let (c, size) = cs
            .split_once(['x', 'X'])
            .ok_or_else(|| bad(format!("{cs:?} is not COUNTxSIZE")))?;
        let count = c
            .parse::<u32>()
            .map_err(|_| bad(format!("count {c:?} is not a number")))?;
        let chunk = parse_size(size).map_err(|e| bad(e.to_string()))?;
        let page = page_size.bytes().unwrap_or(4096) as u64;
        if chunk == 0 || chunk % page != 0 {
            return Err(bad(format!(
                "{} is not a positive multiple of the page size {}",
                format_bytes(chunk),
                format_bytes(page)
            )));
        }
        Ok(PoolTarget {
            node: NodeId(node),
            page_size,
            chunk,
            count,
        })
    }
}

/// How to run the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The socket path (its directory is created with mode 0750, or 0700 without a group).
    pub socket: PathBuf,
    /// The ledger the warm memory is charged to (clients must use the same file).
    pub ledger: Arc<Ledger>,
    /// A group whose members may ask for memory besides root (and the service's own user).
    pub group: Option<u32>,
    /// The warm pools.
    pub pools: Vec<PoolTarget>,
    /// How often the background thread looks for returned memory and refills.
    pub poll: Duration,
    /// How long a connection may take to send its request.
    pub request_timeout: Duration,
}

impl ServiceConfig {
    /// A configuration with the defaults: no group, no pools, 20 ms poll, 10 s request
    /// timeout.
    pub fn new(socket: impl Into<PathBuf>, ledger: Arc<Ledger>) -> ServiceConfig {
        ServiceConfig {
            socket: socket.into(),
            ledger,
            group: None,
            pools: Vec::new(),
            poll: Duration::from_millis(20),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What the service has done so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceStats {
    /// Requests served from a warm pool.
    pub warm_served: u64,
    /// Requests served by a cold reservation.
    pub cold_served: u64,
    /// Requests refused.
    pub refused: u64,
    /// Memory files returned by clients.
    pub returned: u64,
    /// Bytes zeroed in the background, and the seconds it took.
    pub zeroed_bytes: u64,
    /// Seconds spent zeroing (wall-clock).
    pub zero_seconds: f64,
    /// CPU seconds the zeroing thread spent zeroing (at idle priority, wall-clock time also
    /// counts the time other work ran instead).
    pub zero_cpu_seconds: f64,
    /// Bytes made warm from nothing (refill), and the seconds it took.
    pub refilled_bytes: u64,
    /// Seconds spent refilling.
    pub refill_seconds: f64,
    /// Returned files found still held by a process (not zeroed yet, looked at again later).
    pub deferred: u64,
    /// Warm files dropped (over the target, or their charge refused on return).
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_parse_and_bad_ones_say_why() {
        let p: PoolTarget = "1:2m:8x512MiB".parse().unwrap();
        assert_eq!(
            p,
            PoolTarget {
                node: NodeId(1),
                page_size: PageSize::Huge2M,
                chunk: 512 << 20,
                count: 8
            }
        );
        for bad in [
            "0:2m",
            "x:2m:1x2MiB",
            "0:auto:1x2MiB",
            "0:2m:1x3MiB",
            "0:2m:ax2MiB",
            "0:1g:1x0",
        ] {
            let e = bad.parse::<PoolTarget>().unwrap_err();
            assert!(e.to_string().contains("NODE:PAGE:COUNTxSIZE"), "{bad}: {e}");
            assert!(matches!(e, ParseError::Malformed { what: "pool", .. }));
        }
        let j: PoolTarget =
            serde_json::from_str(r#"{"node":0,"page_size":"2m","chunk":"64MiB","count":2}"#)
                .unwrap();
        assert_eq!(j.chunk, 64 << 20);
    }
}
