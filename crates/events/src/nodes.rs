//! [`BrokerNodes`]: the nodes of one RabbitMQ cluster, parsed once from `AMQP_URL`.
//!
//! `AMQP_URL` holds one full AMQP URI or several, comma-separated
//! (`amqp://u:p@h1:5672/%2f,amqp://u:p@h2:5672/%2f`). Every entry is parsed at start-up, so a
//! malformed one stops the service before it runs, and the error names the entry by its
//! position only: an entry may carry a password, so neither the error nor `Debug` ever
//! shows one. A node is shown as `host:port` ([`BrokerNode::address`]), which is what the
//! readiness bodies report.
//!
//! Each process starts at its own, random node ([`BrokerNodes::random_start`]) so replicas
//! given the same list spread over the cluster instead of all piling onto its first node.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;

use lapin::uri::AMQPUri;

/// What every entry must look like (said in errors instead of echoing the entry).
const EXPECTED: &str = "expected amqp://USER:PASSWORD@HOST:PORT/VHOST, several separated by commas";

/// One node: its AMQP URI (credentials included, never printed) and `host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerNode {
    uri: AMQPUri,
    address: String,
}

impl BrokerNode {
    /// `host:port`: safe to log and report.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The parsed URI, credentials included: for connecting, never for printing.
    pub fn uri(&self) -> &AMQPUri {
        &self.uri
    }
}

impl fmt::Debug for BrokerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerNode({}/{})", self.address, self.uri.vhost)
    }
}

impl fmt::Display for BrokerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

impl FromStr for BrokerNode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if !(text.starts_with("amqp://") || text.starts_with("amqps://")) {
            return Err(EXPECTED.to_owned());
        }
        // lapin takes the host from `Url::domain`, which is `None` for an IPv6 literal: it
        // would silently connect to `localhost` instead. Refuse rather than surprise.
        let authority = text.split_once("://").map_or("", |(_, rest)| rest);
        let authority = authority.split(['/', '?']).next().unwrap_or_default();
        if authority.contains('[') {
            return Err(
                "IPv6 literals are not supported by the AMQP client: use a host name".to_owned(),
            );
        }
        // lapin's own message may quote the URI: say only what is expected.
        let uri: AMQPUri = text.parse().map_err(|_reason| EXPECTED.to_owned())?;
        if uri.authority.host.is_empty() {
            return Err(EXPECTED.to_owned());
        }
        let address = format!("{}:{}", uri.authority.host, uri.authority.port);
        Ok(BrokerNode { uri, address })
    }
}

/// The nodes of one cluster, at least one, in the order `AMQP_URL` lists them.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerNodes {
    nodes: Vec<BrokerNode>,
}

impl BrokerNodes {
    /// Parses `AMQP_URL`: one AMQP URI or several separated by commas. The error says which
    /// entry is wrong by position and never quotes it.
    pub fn parse(text: &str) -> Result<BrokerNodes, String> {
        let entries: Vec<&str> = text.split(',').collect();
        let count = entries.len();
        let nodes = entries
            .into_iter()
            .enumerate()
            .map(|(index, entry)| {
                let position = format!("entry {} of {count}", index + 1);
                match (entry.trim().is_empty(), count) {
                    (true, 1) => Err(format!("is empty; {EXPECTED}")),
                    (true, _) => Err(format!("{position} is empty; {EXPECTED}")),
                    (false, 1) => entry.parse::<BrokerNode>(),
                    (false, _) => entry
                        .parse::<BrokerNode>()
                        .map_err(|reason| format!("{position}: {reason}")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BrokerNodes { nodes })
    }

    /// The nodes in the listed order (never empty).
    pub fn nodes(&self) -> &[BrokerNode] {
        &self.nodes
    }

    /// How many nodes there are (at least one).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always `false`: a list has at least one node (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The first node: for one-off tools that have no reason to spread out.
    pub fn first(&self) -> &BrokerNode {
        &self.nodes[0]
    }

    /// The node at `index`, wrapping around the list.
    pub fn get(&self, index: usize) -> &BrokerNode {
        &self.nodes[index % self.nodes.len()]
    }

    /// A random index into the list, different from process to process (std's per-process
    /// random hash keys), so replicas given the same list start on different nodes.
    pub fn random_start(&self) -> usize {
        let random = RandomState::new().hash_one(std::process::id());
        // The modulo of a u64 by a usize length always fits in usize.
        usize::try_from(random % self.nodes.len() as u64).unwrap_or(0)
    }

    /// `host:port` of every node, comma-separated: safe to log.
    pub fn addresses(&self) -> String {
        let addresses: Vec<&str> = self.nodes.iter().map(BrokerNode::address).collect();
        addresses.join(",")
    }
}

impl FromStr for BrokerNodes {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        BrokerNodes::parse(text)
    }
}

impl fmt::Debug for BrokerNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.nodes).finish()
    }
}

impl fmt::Display for BrokerNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addresses())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_or_a_comma_separated_list_parses_in_order() {
        let one = BrokerNodes::parse("amqp://guest:guest@localhost:5672/%2f").expect("one node");
        assert_eq!(one.addresses(), "localhost:5672");
        let list = BrokerNodes::parse(
            "amqp://u:p@h1:5672/%2f, amqp://u:p@h2:5673/%2f ,amqp://u:p@10.0.0.3/vh",
        )
        .expect("three nodes");
        assert_eq!(list.len(), 3);
        assert_eq!(list.addresses(), "h1:5672,h2:5673,10.0.0.3:5672");
        assert_eq!(list.get(4).address(), "h2:5673", "wraps around");
        assert_eq!(list.nodes()[2].uri().vhost, "vh");
    }

    #[test]
    fn a_malformed_entry_is_named_by_position_without_its_text() {
        let cases = [
            (
                "amqp://u:s3cret@h1:5672/%2f,http://u:s3cret@h2",
                "entry 2 of 2",
            ),
            (
                "amqp://u:s3cret@h1:5672/%2f,,amqp://u:s3cret@h2",
                "entry 2 of 3 is empty",
            ),
            ("amqp://u:s3cret@h1:5672/%2f,", "entry 2 of 2 is empty"),
            ("amqp://u:s3cret@h1:notaport/%2f", "expected amqp://"),
            ("", "is empty"),
            ("s3cret", "expected amqp://"),
        ];
        for (text, expected) in cases {
            let error = BrokerNodes::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains("s3cret"), "{text:?}: {error}");
        }
    }

    #[test]
    fn debug_and_display_never_show_a_password() {
        let list =
            BrokerNodes::parse("amqp://user:s3cret@h1:5672/%2f,amqp://user:s3cret@h2:5672/v")
                .expect("parses");
        for shown in [format!("{list:?}"), format!("{list:#?}"), list.to_string()] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("h1:5672"), "{shown}");
        }
    }

    #[test]
    fn ipv6_literals_are_refused_and_the_start_is_within_the_list() {
        // lapin would connect to `localhost` instead of an IPv6 literal.
        let error = BrokerNodes::parse("amqp://u:p@h1:5672/%2f,amqp://u:p@[::1]:5672/%2f")
            .expect_err("an IPv6 literal");
        assert!(error.starts_with("entry 2 of 2: IPv6"), "{error}");
        let list =
            BrokerNodes::parse("amqp://u:p@h1:5672/%2f,amqp://u:p@h2:5672/%2f").expect("parses");
        assert!((0..50).all(|_| list.random_start() < list.len()));
    }
}
