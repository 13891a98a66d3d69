//! The sidecar daemon: configuration, watching checkpoint folders, the work queue, HTTP (`/metrics`,
//! `/healthz`, the JSON API), the Prometheus registry and systemd notification.
