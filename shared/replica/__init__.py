"""The life of a Coordinator replica (verifier or CA): joining the trust domain and staying a member.

- :mod:`.join`: both sides of the Coordinator join (docs/protocol.md §4);
- :mod:`.membership`: what a joined replica holds, and the key source that obtains it;
- :mod:`.lifecycle`: the replica's background loop (join, authenticated manifest reads, readiness);
- :mod:`.deps`: what a replica service depends on, injected.
"""
