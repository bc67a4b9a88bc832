"""The queue's door plates: the dotted name of every function django-q2 runs (all of them in
clones.tasks), and the names of the periodic schedules.

Kept apart from tasks.py, which imports everything: whoever queues a task names it here without
importing what runs it. django-q2 stores these names (Schedule.func, queued tasks) and finds the
function by them when it runs: renaming one strands what was stored under the old name. Schedule
rows are renamed on migrate (FORMER_NAMES); a task already queued under an old name is not: a
webhook attempt is given a new task by the recovery sweep, an email queued in the seconds of the
upgrade is lost (django-q2 logs it). Let the queue drain before an upgrade that renames one.
"""

RUN_CLONE_JOB = "clones.tasks.run_clone_job"
EXPIRE_ARCHIVES = "clones.tasks.expire_archives"
RECOVER = "clones.tasks.recover"
DELIVER_WEBHOOK = "clones.tasks.deliver_webhook"
SEND_EMAIL = "clones.tasks.send_email"
DISPATCH_CHECKS = "clones.tasks.dispatch_checks"
CHECK_WATCH = "clones.tasks.check_watch"
SEND_WATCH_EMAIL = "clones.tasks.send_watch_email"

EXPIRY_SCHEDULE = "cloneshelf: delete expired archives"
RECOVERY_SCHEDULE = "cloneshelf: recover stuck jobs and leftovers"
CHECKS_SCHEDULE = "cloneshelf: check due watches"

# What Schedule rows written before these names call them: tasks.ensure_schedules renames them.
FORMER_NAMES = {
    "clones.recovery.recover": RECOVER,
    "clones.webhooks.deliver": DELIVER_WEBHOOK,
    "clones.notifications.send_email": SEND_EMAIL,
}
