//! Per-service broker users (placeholder).
