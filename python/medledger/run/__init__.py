"""Process entry points: a node (`node`), a hub (`hub`), a devnet (`devnet`), the homes
they run from (`homes`) and starting them as child processes (`launcher`). This is the
one place that wires the parts of a process together."""
