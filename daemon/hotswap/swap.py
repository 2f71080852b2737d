"""The bus messages of a plugin swap, master <-> gateway workers.

| kind           | direction        | fields                   |
|----------------|------------------|--------------------------|
| plugin_prepare | master -> worker | token, name, spec        |
| plugin_commit  | master -> worker | token, name              |
| plugin_abort   | master -> worker | token, name              |
| plugin_unload  | master -> worker | token, name              |
| plugin_snapshot| master -> worker | token (reply has plugins)|
| plugin_reply   | worker -> master | token, ok, error         |
| plugin_state   | worker -> master | plugins: {name: {version, state}} |
"""

PREPARE = "plugin_prepare"
COMMIT = "plugin_commit"
ABORT = "plugin_abort"
UNLOAD = "plugin_unload"
SNAPSHOT = "plugin_snapshot"
REPLY = "plugin_reply"
STATE = "plugin_state"
