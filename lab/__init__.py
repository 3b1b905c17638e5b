"""Local lab: the product's cluster on real Corosync/Pacemaker in namespaces, AWS by moto."""
