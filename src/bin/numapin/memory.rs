//! The options that say what memory to reserve, shared by `numapin reserve` and `numapin run`.

use numapin::pool::Request;
use numapin::{MemPolicy, NodeId, PageSize, Reservation, ReservationBuilder};

/// What memory to reserve: size, nodes, policy, page size, populate threads.
#[derive(Debug, clap::Args)]
pub struct MemoryArgs {
    /// Bytes to reserve: `512MiB`, `8GiB`, `8G` or plain bytes.
    #[arg(long, value_parser = numapin::parse_size)]
    pub size: u64,
    /// Node(s) of the policy; repeat for several. Default: the node of the calling CPU.
    #[arg(long = "node")]
    pub nodes: Vec<u32>,
    /// Memory policy.
    #[arg(long, default_value = "bind")]
    pub policy: MemPolicy,
    /// Page size: 4k, thp, 2m, 1g or auto.
    #[arg(long, default_value = "auto")]
    pub page_size: PageSize,
    /// Populate threads (default: the target node's CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl MemoryArgs {
    /// A reservation builder with these options.
    pub fn builder(&self) -> ReservationBuilder {
        let mut b = Reservation::builder(self.size)
            .policy(self.policy)
            .page_size(self.page_size);
        if !self.nodes.is_empty() {
            b = b.nodes(self.nodes.iter().map(|&n| NodeId(n)));
        }
        if let Some(t) = self.threads {
            b = b.threads(t);
        }
        b
    }

    /// The same memory asked of the warm-pool service for `vm`.
    pub fn pool_request(&self, vm: String) -> Request {
        let mut req = Request::new(vm, self.size, self.page_size);
        req.nodes = self.nodes.clone();
        req.policy = self.policy;
        req
    }
}
