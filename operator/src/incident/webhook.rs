//! Incident alerts to an incoming webhook (Slack, Teams or plain JSON receivers).
