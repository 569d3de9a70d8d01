"""The migration reconcile loop: drives every migration one step per pass, from what the database
says and what the agents report (level-triggered: after a controller restart the same code picks
up each migration where its record stands, asking the agents what really happened).

  scheduled  -> destination prepares an incoming QEMU            -> preparing
  preparing  -> source starts the TLS stream                      -> running
  running    -> progress stored each pass; convergence policy:
                stalled passes climb the downtime ladder; the completion timeout and the
                no-progress timeout take the policy's action (abort, or post-copy)
  switching  -> destination runs it (finish_destination, announce), source process removed
                (finish_source), then one transaction: the instance's host changes, the
                source claim is released                          -> completed
  any failure or abort -> source abort (it keeps running), destination abort, claim released

One module per phase, each a set of steps (plain functions of a `Context` and a `Job`):

  reconciler.py  MigrationReconciler: the pass, one task per migration, which step comes next
  jobs.py        Job (a migration with its instance and hosts), loading them, stream gate, ports
  context.py     what every step uses: the store, the agents, the record of a step
  stream.py      prepare, start, monitor, converge (escalate, timeout), cancel
  switch.py      the move: destination runs it, source removed, instance and claims follow
  unwind.py      failed or cancelled: the source keeps the guest, the destination is cleaned
  recovery.py    a step failed at an agent: ask both ends (judge.py decides), act or wait
  leftovers.py   a copy an end could not remove: recorded, removal retried until it answers
  judge.py       where the instance runs, from both ends' answers (pure)
  ports.py       the port a destination listens on (pure)

Crash safety rests on three rules:

- Agent calls come before the record that they happened, and every call is idempotent, so a
  pass interrupted anywhere is simply repeated: finish_destination returns the running guest,
  finish_source returns when the source copy is gone, aborts of what is gone succeed.
- Before the stream, an agent that fails a step unwinds the migration, unless the source no
  longer runs the guest (its QEMU died): then it failed as lost, the instance in error (a
  drain moves it cold rather than live again elsewhere). From `running` on, when
  the source cannot report the stream (its agent is unreachable, or the guest is no longer
  there) or a step at either end fails, both agents are asked where the instance runs and
  `judge` decides: the destination runs it as its own guest -> complete the move; the source runs
  it and the destination has no incoming copy -> unwind at once; the source runs it and the stream
  stays invisible for the policy's `no_progress_s` -> unwind (the safe direction); neither end runs
  it -> failed, instance in error; anything else -> wait, with the reason in the migration's
  `error` and one `migration.waiting` event per new reason. From `running` on, a migration is
  unwound only when its source runs the guest, and committed only after the source itself
  confirmed the abort (the guest keeps running there).
- An end that cannot be cleaned up does not hold the migration: a completed move whose source
  agent is unreachable, or an unwind whose destination agent is, is committed with `leftover`
  naming that end (event `migration.leftover`), and later passes retry the removal until the agent
  answers (event `migration.cleaned`). Records and allocations follow the instance, never the
  leftover copy (a paused, handed-over source, or an incoming target).
"""
