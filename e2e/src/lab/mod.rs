//! Lab building blocks: network namespaces, veth links, and routing daemons (FRR, BIRD) run as test peers.
