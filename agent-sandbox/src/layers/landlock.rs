//! Landlock layer: filesystem allow-lists, TCP ports, signal and abstract-socket scoping.
