//! storagesvc
