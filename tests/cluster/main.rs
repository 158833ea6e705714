//! The integration suites that need an API server, in one test binary: each runs against the
//! backend `KEYSMITH_TEST_CLUSTER` names, the API emulator (default) or a real kube-apiserver,
//! etcd and kube-controller-manager built by `testenv/install`. Suites that need what only the
//! emulator can do (fault injection, compaction) say so and skip those parts on the real server.

mod harness;

mod access_lists;
mod admission_policy;
mod controller_cli;
mod controller_leader;
mod controller_lifecycle;
mod controller_redaction;
mod controller_rotation;
mod crash_consistency;
mod examples;
mod fault_soak;
mod gateway_publish;
mod gateway_publish_agentgateway;
mod hostile_input;
mod kubectl_plugin;
mod leak_reports;
mod lifecycle_properties;
mod openapi;
mod personal_keys;
mod printer_columns;
mod rbac_minimal;
mod scan_rules;
mod secret_races;
mod usage;
mod verifier_endpoints;
mod verifier_revocation;
