# Writes standard input to the file named by the first argument and prints the SHA-256 of the
# bytes written. airlock runs it for large uploads on hosts where python3 starts. Hashing the
# bytes as they arrive overlaps the hash with the transfer, while `cat > FILE` followed by a hash
# of FILE reads the whole file a second time after the last byte arrived.
#
# The main thread reads and writes, and a second thread hashes what was written. hashlib and
# os.write release the GIL, so the two threads use two CPUs. Buffers go back to the reader only
# once they are hashed.
#
# It runs under `python3 -I -S`, uses only modules that every Python 3 has, and contains no
# single quote, because airlock passes it in single quotes on the command line.
import fcntl
import hashlib
import os
import queue
import sys
import threading

F_SETPIPE_SZ = 1031
CHUNK = 1 << 20
BUFFERS = 4

path = sys.argv[1]
try:
    # A larger pipe from sshd means fewer, larger reads.
    fcntl.fcntl(0, F_SETPIPE_SZ, CHUNK)
except OSError:
    pass

digest = hashlib.sha256()
free = queue.Queue()
written = queue.Queue()
for _ in range(BUFFERS):
    free.put(bytearray(CHUNK))


def hash_written():
    while True:
        item = written.get()
        if item is None:
            return
        buffer, count = item
        digest.update(memoryview(buffer)[:count])
        free.put(buffer)


hasher = threading.Thread(target=hash_written)
hasher.start()
try:
    try:
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        end = False
        while not end:
            buffer = free.get()
            view = memoryview(buffer)
            # sshd passes the bytes on as packets arrive, so the buffer is filled completely
            # before it is written, which keeps the writes and hand-overs to the hasher few.
            count = 0
            while count < CHUNK:
                read = os.readv(0, [view[count:]])
                if read == 0:
                    end = True
                    break
                count += read
            done = 0
            while done < count:
                done += os.write(out, view[done:count])
            written.put((buffer, count))
        os.close(out)
    finally:
        written.put(None)
        hasher.join()
except OSError as error:
    sys.stderr.write("%s: %s\n" % (path, error.strerror))
    sys.exit(1)
print(digest.hexdigest())
