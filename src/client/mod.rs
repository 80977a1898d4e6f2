//! The interactive chat client (`muxchat`): one thread, one `mio::Poll` over stdin and the socket.
