//! A stop-gap until version 3 is wired into the cluster (issue 20's
//! cluster part, branch `cid`): a version-3 session registered on a node
//! claims its nick in the store without waiting for the answer, so the
//! store's events can name it. Enough for accounts with one session and
//! guests with unique nicks; a nick taken on another node is not refused.

use mio::Token;

use super::super::chat::Chat;
use super::{fold, Expect};

impl Chat {
    /// `t` registered with version 3 on this node.
    pub(crate) fn cluster_claim_v3(&mut self, t: Token, nick: &str) {
        let sid = self.sessions.at(t).id();
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let (node, ttl, sid_s) = (
            c.node.clone(),
            c.ttl.as_millis().to_string(),
            sid.to_string(),
        );
        let nk = fold(nick);
        c.fcall(
            Expect::Ignore("version-3 claim"),
            "mc_hello",
            &[
                nk.as_bytes(),
                nick.as_bytes(),
                node.as_bytes(),
                sid_s.as_bytes(),
                ttl.as_bytes(),
            ],
        );
        c.sids.insert(sid, t);
        c.claims.insert(sid, 0);
    }
}
