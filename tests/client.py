#!/usr/bin/python3
"""A D-Bus client on python3-dbus (libdbus underneath), for tests that need a second
implementation or another user (run under setpriv). Prints the reply, or the error name and
message on one line and exits 1.

    client.py ADDRESS run POOL TEXT
    client.py ADDRESS submit POOL TEXT
    client.py ADDRESS submit-with POOL TEXT KEY=VALUE...  options: VALUE as a Python literal (5 → int32)
    client.py ADDRESS cancel ID
    client.py ADDRESS call-pool POOL METHOD [ARGS...]     (unsigned ints for Scale)
    client.py ADDRESS call-worker POOL SLOT METHOD [ARGS...]
    client.py ADDRESS call-manager METHOD
    client.py ADDRESS get PROPERTY                        (of the Manager)
    client.py ADDRESS submit-many POOL N TEXT             N Submit calls on one connection

ADDRESS "peer:unix:path=..." connects peer-to-peer, to apiaryd's private socket.
"""
import sys

import dbus


def path_escape(name):
    # sd-bus's path encoding: [A-Za-z0-9] kept, everything else _XX.
    return "".join(c if c.isalnum() and c.isascii() else "_%02x" % ord(c) for c in name)


def main():
    address, verb = sys.argv[1], sys.argv[2]
    if address.startswith("peer:"):
        conn = dbus.connection.Connection(address[len("peer:"):])
        get_object = lambda name, path: conn.get_object(None, path, introspect=False)
    else:
        bus = dbus.bus.BusConnection(address)
        get_object = lambda name, path: bus.get_object(name, path)
    manager = dbus.Interface(get_object("org.apiary.Apiary1", "/org/apiary/Apiary1"),
                             "org.apiary.Apiary1.Manager")
    try:
        if verb == "run":
            result = manager.Run(sys.argv[3], dbus.ByteArray(sys.argv[4].encode()), dbus.Dictionary({}, signature="sv"))
            print(bytes(result).decode())
        elif verb == "submit":
            print(int(manager.Submit(sys.argv[3], dbus.ByteArray(sys.argv[4].encode()),
                                     dbus.Dictionary({}, signature="sv"))))
        elif verb == "submit-with":
            import ast
            options = {}
            for arg in sys.argv[5:]:
                key, value = arg.split("=", 1)
                options[key] = ast.literal_eval(value)
            print(int(manager.Submit(sys.argv[3], dbus.ByteArray(sys.argv[4].encode()),
                                     dbus.Dictionary(options, signature="sv"))))
        elif verb == "cancel":
            print(bool(manager.Cancel(dbus.UInt64(int(sys.argv[3])))))
        elif verb == "call-pool":
            obj = get_object("org.apiary.Apiary1", "/org/apiary/Apiary1/pool/" + path_escape(sys.argv[3]))
            args = [dbus.UInt32(int(a)) for a in sys.argv[5:]]
            print(getattr(dbus.Interface(obj, "org.apiary.Apiary1.Pool"), sys.argv[4])(*args))
        elif verb == "call-worker":
            obj = get_object("org.apiary.Apiary1",
                             "/org/apiary/Apiary1/pool/%s/%s" % (path_escape(sys.argv[3]), sys.argv[4]))
            args = [dbus.Int32(int(a)) for a in sys.argv[6:]]
            print(getattr(dbus.Interface(obj, "org.apiary.Apiary1.Worker"), sys.argv[5])(*args))
        elif verb == "submit-many":
            for _ in range(int(sys.argv[4])):
                manager.Submit(sys.argv[3], dbus.ByteArray(sys.argv[5].encode()), dbus.Dictionary({}, signature="sv"))
            print("all accepted")
        elif verb == "get":
            props = dbus.Interface(get_object("org.apiary.Apiary1", "/org/apiary/Apiary1"),
                                   "org.freedesktop.DBus.Properties")
            print(props.Get("org.apiary.Apiary1.Manager", sys.argv[3]))
        elif verb == "call-manager":
            print(getattr(manager, sys.argv[3])())
        else:
            sys.exit("unknown verb " + verb)
    except dbus.exceptions.DBusException as e:
        print("%s: %s" % (e.get_dbus_name(), e.get_dbus_message()))
        sys.exit(1)


main()
