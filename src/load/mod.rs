//! The load generator (`muxload`): opens many connections, publishes on a schedule, measures delivery, latency and loss.
