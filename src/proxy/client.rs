//! `early_request_filter`'s work: the request header is complete, so the
//! connection's header clock stops ([`crate::edge::Connections`]), and the
//! session gets the client-side limits: how long the client may stay silent
//! while sending its body, how long a write to a client that stopped reading
//! may block (then the request ends and frees its backend slot), and how long
//! the connection may idle before its next request.

use pingora::prelude::*;

use super::{Ctx, SluiceProxy};

impl SluiceProxy {
    pub(super) fn client_session(&self, session: &mut Session, ctx: &mut Ctx) {
        ctx.peer = session.client_addr().and_then(|a| a.as_inet()).copied();
        if let Some(peer) = ctx.peer {
            self.connections.request_started(peer);
        }
        let ds = &mut session.downstream_session;
        ds.set_read_timeout(Some(self.server.client_timeout));
        ds.set_write_timeout(Some(self.server.write_timeout));
        // pingora counts keep-alive in whole seconds and reads 0 as "forever":
        // 0 here means no keep-alive at all.
        let idle = self.server.connections.keepalive_timeout.as_secs();
        ds.set_keepalive((idle > 0).then_some(idle));
    }
}
