/*
 * nsrun-monitor: the processes of nsrun that stay alive for the whole run,
 * as one small static program (musl-gcc -static -Os). nsrun embeds it and
 * executes it from a sealed memfd. See monitor.go for why and for the
 * contract of each mode; the Go side builds every argument list.
 *
 *   __nsrun-watch                       (argv[0]) the watcher
 *   nsrun __nsrun-supervise KEY=V... -- nsrun's own arguments
 *   nsrun __nsrun-init KEY=V... -- ARGV  PID 1 of a sandbox
 *
 * It uses system calls only (through musl's thin wrappers): no stdio, no
 * allocation.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Found by tests in a built nsrun: the monitor is embedded. */
const char nsrun_monitor_marker[] = "nsrun-monitor-embedded-v1";

extern char **environ;

/* ---- small helpers ---- */

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

static void put(int fd, const char *s) { write_all(fd, s, strlen(s)); }

/* buf is a bounded string builder. */
struct buf {
	char b[8192];
	size_t n;
};

static void bs(struct buf *b, const char *s)
{
	size_t l = strlen(s);
	if (l > sizeof b->b - 1 - b->n)
		l = sizeof b->b - 1 - b->n;
	memcpy(b->b + b->n, s, l);
	b->n += l;
	b->b[b->n] = 0;
}

static void bnum(struct buf *b, long v)
{
	char t[24];
	int i = sizeof t - 1;
	int neg = v < 0;
	unsigned long u = neg ? -(unsigned long)v : (unsigned long)v;
	t[i] = 0;
	do {
		t[--i] = '0' + u % 10;
		u /= 10;
	} while (u);
	if (neg)
		t[--i] = '-';
	bs(b, t + i);
}

/* bjson appends s as the inside of a JSON string. */
static void bjson(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char t[7] = {0};
		if (c == '"' || c == '\\') {
			t[0] = '\\';
			t[1] = c;
		} else if (c < 0x20) {
			t[0] = '\\', t[1] = 'u', t[2] = '0', t[3] = '0';
			t[4] = hex[c >> 4], t[5] = hex[c & 15];
		} else {
			t[0] = c;
		}
		bs(b, t);
	}
}

static int parse_num(const char *s, long *out)
{
	long v = 0;
	int neg = 0;
	if (*s == '-')
		neg = 1, s++;
	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
	}
	*out = neg ? -v : v;
	return 0;
}

/* parse_list reads "1,2,3" into out (at most max); returns the count. */
static int parse_list(const char *s, int *out, int max)
{
	int n = 0;
	while (*s && n < max) {
		long v = 0;
		while (*s >= '0' && *s <= '9')
			v = v * 10 + (*s++ - '0');
		out[n++] = (int)v;
		if (*s == ',')
			s++;
		else
			break;
	}
	return n;
}

/* Go's texts of the errnos an exec commonly fails with (musl's differ). */
static const char *errtext(int e)
{
	switch (e) {
	case ENOENT: return "no such file or directory";
	case EACCES: return "permission denied";
	case ENOEXEC: return "exec format error";
	case EISDIR: return "is a directory";
	case ENOTDIR: return "not a directory";
	case ELOOP: return "too many levels of symbolic links";
	case ENAMETOOLONG: return "file name too long";
	case E2BIG: return "argument list too long";
	case ENOMEM: return "cannot allocate memory";
	case ETXTBSY: return "text file busy";
	case EPERM: return "operation not permitted";
	case EINVAL: return "invalid argument";
	case ENOSPC: return "no space left on device";
	case EBUSY: return "device or resource busy";
	case ECHILD: return "no child processes";
	case EAGAIN: return "resource temporarily unavailable";
	}
	return strerror(e);
}

/* keep_only closes every fd from 3 up except those in keep. */
static void keep_only(const int *keep, int nkeep)
{
	unsigned int from = 3;
	for (;;) {
		unsigned int next = ~0u; /* lowest kept fd >= from */
		for (int i = 0; i < nkeep; i++)
			if (keep[i] >= (int)from && (unsigned int)keep[i] < next)
				next = (unsigned int)keep[i];
		if (next == ~0u) {
			syscall(SYS_close_range, from, ~0u, 0);
			return;
		}
		if (next > from)
			syscall(SYS_close_range, from, next - 1, 0);
		from = next + 1;
	}
}

/* test_stop stops this process at a named point when NSRUN_TEST_STOP_AT
 * names it (as nsrun's stopForTest does), so tests can act exactly there. */
static void test_stop(const char *point)
{
	const char *v = getenv("NSRUN_TEST_STOP_AT");
	if (v && strcmp(v, point) == 0)
		kill(getpid(), SIGSTOP);
}

/* ---- watch ---- */

/* The watcher (cmd/nsrun/watch.go): fd 3 is a pipe only nsrun writes, fd 4
 * the payload's cgroup.kill. "d" (a line) releases it; anything else, EOF
 * included, kills the payload. */
static int do_watch(void)
{
	static const int ignored[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGPIPE, SIGUSR1,
				      SIGUSR2, SIGALRM, SIGTSTP, SIGTTIN, SIGTTOU};
	for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
		signal(ignored[i], SIG_IGN);
	prctl(PR_SET_NAME, "nsrun-watch", 0, 0, 0);
	char line[8];
	size_t n = 0;
	for (;;) {
		char c;
		ssize_t r = read(3, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || c == '\n')
			break;
		if (n < sizeof line - 1)
			line[n++] = c;
		else
			n = sizeof line; /* too long: not "d" */
	}
	if (n == 1 && line[0] == 'd')
		return 0;
	write_all(4, "1\n", 2);
	return 0;
}

/* ---- signals ---- */

static sigset_t fwd_set; /* forwarded */

/* take_signals blocks the forwarded set and SIGCHLD (nsrun blocked them
 * already on the thread that exec'd us: nothing was lost meanwhile) and
 * returns a signalfd for them. */
static int take_signals(void)
{
	sigset_t all = fwd_set;
	sigaddset(&all, SIGCHLD);
	sigprocmask(SIG_BLOCK, &all, NULL);
	/* Ignored SIGCHLD would reap the workload for us. */
	signal(SIGCHLD, SIG_DFL);
	return signalfd(-1, &all, SFD_CLOEXEC);
}

static int parse_sigs(const char *s, sigset_t *set)
{
	int v[80];
	int n = parse_list(s, v, 80);
	for (int i = 0; i < n; i++)
		if (v[i] > 0 && v[i] < 65)
			sigaddset(set, v[i]);
	return n;
}

/* ---- supervise ---- */

static const char *payload_dir, *supervisor_dir;

static int read_file(const char *dir, const char *name, char *out, size_t max)
{
	struct buf p = {.n = 0};
	bs(&p, dir);
	bs(&p, "/");
	bs(&p, name);
	int fd = open(p.b, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = 0;
	while (n < max - 1) {
		ssize_t r = read(fd, out + n, max - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	out[n] = 0;
	close(fd);
	return (int)n;
}

/* field finds "KEY VALUE" lines (memory.events, cgroup.events). */
static long field(const char *text, const char *key)
{
	size_t kl = strlen(key);
	const char *p = text;
	while (p && *p) {
		if (strncmp(p, key, kl) == 0 && p[kl] == ' ')
			return strtol(p + kl + 1, NULL, 10);
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return -1;
}

static long oom_kills(void)
{
	char t[1024];
	if (read_file(payload_dir, "memory.events", t, sizeof t) < 0)
		return 0;
	long v = field(t, "oom_kill");
	return v < 0 ? 0 : v;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* kill_payload is delegate.Tree.KillPayload(10s): cgroup.kill, then wait
 * (cgroup.events, POLLPRI) until the leaf is empty. */
static void kill_payload(void)
{
	struct buf p = {.n = 0}, w = {.n = 0};
	bs(&p, payload_dir);
	bs(&p, "/cgroup.kill");
	int fd = open(p.b, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "1", 1) != 1) {
		int e = errno;
		bs(&w, "nsrun: warning: kill ");
		bs(&w, payload_dir);
		bs(&w, ": ");
		if (fd < 0) {
			bs(&w, "open ");
			bs(&w, p.b);
			bs(&w, ": ");
		}
		bs(&w, errtext(e));
		bs(&w, "\n");
		put(2, w.b);
		if (fd >= 0)
			close(fd);
		return;
	}
	close(fd);
	p.n = 0;
	bs(&p, payload_dir);
	bs(&p, "/cgroup.events");
	int ev = open(p.b, O_RDONLY | O_CLOEXEC);
	long deadline = now_ms() + 10000;
	for (;;) {
		char t[256];
		if (read_file(payload_dir, "cgroup.events", t, sizeof t) < 0 || field(t, "populated") != 1)
			break;
		long left = deadline - now_ms();
		if (left <= 0) {
			bs(&w, "nsrun: warning: ");
			bs(&w, payload_dir);
			bs(&w, " still holds processes after 10s\n");
			put(2, w.b);
			break;
		}
		if (ev >= 0) {
			char x[256];
			lseek(ev, 0, SEEK_SET);
			(void)!read(ev, x, sizeof x);
			struct pollfd pf = {.fd = ev, .events = POLLPRI};
			poll(&pf, 1, left < 100 ? (int)left + 1 : 100);
		} else {
			usleep(10000);
		}
	}
	if (ev >= 0)
		close(ev);
}

/* exit_message finds the init's {"kind":"exit",...} line in text (the
 * messages nsexec's child and the init write, one JSON object a line). */
static int exit_message(const char *text, long *status, long *sig)
{
	const char *p = text;
	while (p && *p) {
		const char *end = strchr(p, '\n');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char line[512];
		if (len < sizeof line) {
			memcpy(line, p, len);
			line[len] = 0;
			if (strstr(line, "\"kind\":\"exit\"")) {
				char *s = strstr(line, "\"status\":");
				char *g = strstr(line, "\"signal\":");
				*status = s ? strtol(s + 9, NULL, 10) : 0;
				*sig = g ? strtol(g + 9, NULL, 10) : 0;
				return 1;
			}
		}
		p = end ? end + 1 : NULL;
	}
	return 0;
}

/* ---- supervise: the sandbox child's answer to its release ---- */

/* json_str copies the JSON string value that follows key (which ends with
 * the opening quote) in line into out, unescaped (\uXXXX only for ASCII,
 * as Go's encoder writes it), and returns 1; 0 if key is not there. */
static int json_str(const char *line, const char *key, char *out, size_t max)
{
	const char *p = strstr(line, key);
	if (!p)
		return 0;
	p += strlen(key);
	size_t n = 0;
	while (*p && *p != '"' && n < max - 1) {
		char c = *p++;
		if (c == '\\' && *p) {
			c = *p++;
			switch (c) {
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			case 'r': c = '\r'; break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case 'u': {
				int v = 0;
				for (int i = 0; i < 4 && *p; i++, p++) {
					char h = *p;
					v = v * 16 + (h >= '0' && h <= '9' ? h - '0' : ((h | 32) - 'a' + 10) & 15);
				}
				c = v < 0x80 ? (char)v : '?';
				break;
			}
			default: break; /* \" \\ \/ */
			}
		}
		out[n++] = c;
	}
	out[n] = 0;
	return 1;
}

static const char *errprefix = ""; /* "start ARGV0: ", as startError */

/* start_failed reports a sandbox that did not start as cmd/nsrun's
 * startError does (one line; 127 for a command not found, 126 for one not
 * executable, else 125; nsexec.ChildError.Is decides which). */
static int start_failed(const char *msg, const char *step, long errnum)
{
	struct buf m = {.n = 0};
	bs(&m, "nsrun: ");
	bs(&m, errprefix);
	bs(&m, msg);
	bs(&m, "\n");
	put(2, m.b);
	if (strcmp(step, "exec") == 0) {
		if (errnum == ENOENT)
			return 127;
		if (errnum == EACCES || errnum == ENOEXEC || errnum == EISDIR)
			return 126;
	}
	return 125;
}

/* kill_child kills and reaps the released child; its wait status. */
static int kill_child(long pid)
{
	int st = 0;
	kill((pid_t)pid, SIGKILL);
	while (waitpid((pid_t)pid, &st, 0) < 0 && errno == EINTR)
		;
	return st;
}

/* child_gone kills and reaps the child whose sync socket ended without an
 * answer and says how it ended, as nsexec's childGone does. */
static int child_gone(long pid)
{
	int st = kill_child(pid);
	struct buf m = {.n = 0};
	bs(&m, "start sandbox: wait for the workload to start: sandbox child died before the workload ran (");
	if (WIFSIGNALED(st)) {
		char name[64];
		const char *d = strsignal(WTERMSIG(st));
		size_t i = 0;
		for (; d && d[i] && i < sizeof name - 1; i++)
			name[i] = d[i];
		name[i] = 0;
		if (name[0] >= 'A' && name[0] <= 'Z')
			name[0] |= 32; /* Go's "signal: killed" */
		bs(&m, "signal: ");
		bs(&m, name);
	} else {
		bs(&m, "exit status ");
		bnum(&m, WEXITSTATUS(st));
	}
	bs(&m, ")");
	return start_failed(m.b, "", 0);
}

/*
 * await_start reads the released child's answer as nsexec's exchange does:
 * {started} (an init runs; what follows it goes to rest, its {exit} comes
 * later) returns 0; {exec} and then the socket's end (the child became the
 * workload) returns 1; {error}, an end without {exec}, or no answer by the
 * deadline is a failed start: reported, the child killed and reaped, and
 * minus the exit status returned. Forwarded signals that come meanwhile
 * are queued in q for after the start (the init is not ready for them).
 */
static int await_start(long pid, int syncfd, int sfd, long wait_ms, const char *timeout_text,
		       struct buf *rest, int *q, int *nq, int maxq)
{
	static struct buf in;
	int execing = 0;
	long deadline = now_ms() + wait_ms;
	in.n = 0;
	in.b[0] = 0;
	for (;;) {
		char *nl;
		while ((nl = memchr(in.b, '\n', in.n)) != NULL) {
			*nl = 0;
			char *line = in.b;
			size_t used = (size_t)(nl - in.b) + 1;
			if (strstr(line, "\"kind\":\"started\"")) {
				rest->n = 0;
				rest->b[0] = 0;
				bs(rest, nl + 1);
				return 0;
			} else if (strstr(line, "\"kind\":\"exec\"")) {
				execing = 1;
			} else if (strstr(line, "\"kind\":\"warn\"")) {
				char t[1024];
				struct buf w = {.n = 0};
				json_str(line, "\"text\":\"", t, sizeof t);
				bs(&w, "nsrun: warning: ");
				bs(&w, t);
				bs(&w, "\n");
				put(2, w.b);
			} else if (strstr(line, "\"kind\":\"error\"")) {
				char msg[2048], step[64];
				kill_child(pid);
				if (!json_str(line, "\"Msg\":\"", msg, sizeof msg))
					return -start_failed("start sandbox: child failed without a reason", "", 0);
				if (!json_str(line, "\"Step\":\"", step, sizeof step))
					step[0] = 0;
				const char *e = strstr(line, "\"Errno\":");
				return -start_failed(msg, step, e ? strtol(e + 8, NULL, 10) : 0);
			} else {
				char kind[64];
				struct buf m = {.n = 0};
				if (!json_str(line, "\"kind\":\"", kind, sizeof kind))
					kind[0] = 0;
				kill_child(pid);
				bs(&m, "start sandbox: unexpected message \"");
				bs(&m, kind);
				bs(&m, "\"");
				return -start_failed(m.b, "", 0);
			}
			memmove(in.b, in.b + used, in.n - used + 1);
			in.n -= used;
		}
		long left = deadline - now_ms();
		if (left <= 0) {
			struct buf m = {.n = 0};
			kill_child(pid);
			bs(&m, "start sandbox: wait for the workload to start: the sandbox child did not answer within ");
			bs(&m, timeout_text);
			bs(&m, " (stopped or stuck); killed it");
			return -start_failed(m.b, "", 0);
		}
		struct pollfd pf[2] = {{.fd = syncfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
		if (poll(pf, 2, (int)left) < 0)
			continue; /* EINTR; nothing else can fail here */
		if (pf[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo != SIGCHLD && *nq < maxq)
				q[(*nq)++] = (int)si.ssi_signo;
		}
		if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			char t[1024];
			ssize_t r = read(syncfd, t, sizeof t - 1);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r <= 0)
				return execing ? 1 : -child_gone(pid);
			if (in.n + (size_t)r >= sizeof in.b) /* no answer is this long */
				return -child_gone(pid);
			memcpy(in.b + in.n, t, (size_t)r);
			in.n += (size_t)r;
			in.b[in.n] = 0;
		}
	}
}

/*
 * do_supervise is the end of nsrun's supervise() (cmd/nsrun/run.go) once
 * the workload runs: nsrun exec'd itself into this on the thread that
 * forked the workload (so its parent-death signal holds). Arguments:
 *   pid=N          the workload, or the sandbox child (our child)
 *   sigs=A,B,...   the signals to forward
 *   pending=A,...  signals nsrun received during the hand-over
 *   payload=DIR    the payload leaf; supervisor=DIR the supervisor leaf
 *   watch=FD       the write end of the watcher's pipe
 *   sync=FD        with a sandbox init: the sync socket ({exit} comes on it)
 *   syncbuf=TEXT   what nsrun read from it and had not decoded yet
 *   keep=A,B       fds kept open for the sandbox's life (the record)
 *   await=MS       pid is a sandbox child just released: read its answer on
 *                  sync first (await_start), within MS; timeout=TEXT (the
 *                  whole timeout, as Go writes it) and errprefix=TEXT (the
 *                  start of a failed start's message) go with it
 */
static int do_supervise(int argc, char **argv)
{
	long pid = 0, watch = -1, syncfd = -1, await_ms = 0;
	const char *sigs = "", *pending = "", *syncbuf = "", *keeps = "", *timeout_text = "";
	for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++) {
		char *a = argv[i], *v = strchr(a, '=');
		if (!v)
			continue;
		*v++ = 0;
		if (!strcmp(a, "pid")) parse_num(v, &pid);
		else if (!strcmp(a, "sigs")) sigs = v;
		else if (!strcmp(a, "pending")) pending = v;
		else if (!strcmp(a, "payload")) payload_dir = v;
		else if (!strcmp(a, "supervisor")) supervisor_dir = v;
		else if (!strcmp(a, "watch")) parse_num(v, &watch);
		else if (!strcmp(a, "sync")) parse_num(v, &syncfd);
		else if (!strcmp(a, "syncbuf")) syncbuf = v;
		else if (!strcmp(a, "keep")) keeps = v;
		else if (!strcmp(a, "await")) parse_num(v, &await_ms);
		else if (!strcmp(a, "timeout")) timeout_text = v;
		else if (!strcmp(a, "errprefix")) errprefix = v;
	}
	prctl(PR_SET_NAME, "nsrun", 0, 0, 0);
	if (pid <= 0 || !payload_dir || !supervisor_dir) {
		put(2, "nsrun: monitor: bad arguments\n");
		return 125;
	}
	/* Only the fds handed over stay (and 0, 1, 2). */
	int keep[40], nkeep = parse_list(keeps, keep, 32);
	if (watch >= 0)
		keep[nkeep++] = (int)watch;
	if (syncfd >= 0)
		keep[nkeep++] = (int)syncfd;
	sigemptyset(&fwd_set);
	parse_sigs(sigs, &fwd_set);
	int sfd = take_signals();
	keep[nkeep++] = sfd;
	keep_only(keep, nkeep);
	if (sfd < 0) {
		put(2, "nsrun: monitor: signalfd failed\n");
		return 125;
	}
	test_stop("monitor");
	int pend[80], npend = parse_list(pending, pend, 80);
	if (await_ms > 0 && syncfd >= 0) {
		static struct buf rest;
		int r = await_start(pid, (int)syncfd, sfd, await_ms, timeout_text, &rest, pend, &npend, 80);
		if (r < 0) {
			/* What nsrun's abandon does: the child is gone already. */
			kill_payload();
			if (watch >= 0) {
				write_all((int)watch, "d\n", 2);
				close((int)watch);
			}
			rmdir(payload_dir);
			rmdir(supervisor_dir);
			return -r;
		}
		if (r == 1) {
			close((int)syncfd); /* no init: no {exit} to come */
			syncfd = -1;
		}
		syncbuf = rest.b;
		test_stop("started");
	}
	for (int i = 0; i < npend; i++)
		if (pend[i] > 0)
			kill((pid_t)pid, pend[i]);

	int ws = 0;
	for (;;) {
		pid_t r = waitpid((pid_t)pid, &ws, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 && errno != EINTR) {
			struct buf m = {.n = 0};
			bs(&m, "nsrun: wait for workload: ");
			bs(&m, errtext(errno));
			bs(&m, "\n");
			put(2, m.b);
			return 125;
		}
		struct signalfd_siginfo si;
		ssize_t n = read(sfd, &si, sizeof si);
		if (n != sizeof si)
			continue;
		if (si.ssi_signo != SIGCHLD)
			kill((pid_t)pid, (int)si.ssi_signo);
	}
	int code;
	if (WIFSIGNALED(ws))
		code = 128 + WTERMSIG(ws);
	else
		code = WEXITSTATUS(ws);
	if (syncfd >= 0) {
		/* Launch.Wait: the init's {exit} message wins over its own status. */
		static struct buf msg;
		bs(&msg, syncbuf);
		fcntl((int)syncfd, F_SETFL, fcntl((int)syncfd, F_GETFL) | O_NONBLOCK);
		for (;;) {
			char t[512];
			ssize_t r = read((int)syncfd, t, sizeof t - 1);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			t[r] = 0;
			bs(&msg, t);
		}
		close((int)syncfd);
		long st, sg;
		if (exit_message(msg.b, &st, &sg))
			code = sg ? 128 + (int)sg : (int)st;
	}
	long oom = oom_kills();
	/* What the workload left running goes with it. */
	kill_payload();
	if (watch >= 0) {
		write_all((int)watch, "d\n", 2);
		close((int)watch);
	}
	rmdir(payload_dir);
	rmdir(supervisor_dir); /* busy while we are in it: stays for systemd */
	if (oom > 0) {
		struct buf m = {.n = 0};
		bs(&m, "nsrun: the workload was OOM-killed (");
		bnum(&m, oom);
		bs(&m, " process(es) killed by the kernel for exceeding the memory limit; memory.events of ");
		bs(&m, payload_dir);
		bs(&m, ")\n");
		put(2, m.b);
	}
	return code & 255;
}

/* ---- init ---- */

static int sync_out = -1;

static void send_msg(struct buf *m)
{
	bs(m, "\n");
	write_all(sync_out, m->b, m->n);
}

/*
 * do_init is PID 1 of a sandbox's pid namespace (nsexec/init.go): the Go
 * child set everything up (mounts, session, ids, capabilities,
 * no_new_privs, seccomp) and exec'd this with the forwarded signals
 * blocked. It starts the workload, forwards signals to it, reaps orphans,
 * reports the workload's end on the sync socket and exits with its status.
 *   sync=FD   the sync socket; fds=K preserved fds 3..3+K-1 (for the workload)
 *   pty=1     the workload's stdin is its controlling terminal
 *   sigs=...  forwarded (blocked since before the exec: what came
 *             meanwhile is pending, and the signalfd reads it)
 *   path=P    the resolved command; after "--": its argv. environ is its env.
 */
static int do_init(int argc, char **argv)
{
	long syncfd = -1, nfds = 0, pty = 0;
	const char *path = NULL, *sigs = "";
	int i;
	for (i = 2; i < argc && strcmp(argv[i], "--") != 0; i++) {
		char *a = argv[i], *v = strchr(a, '=');
		if (!v)
			continue;
		*v++ = 0;
		if (!strcmp(a, "sync")) parse_num(v, &syncfd);
		else if (!strcmp(a, "fds")) parse_num(v, &nfds);
		else if (!strcmp(a, "pty")) parse_num(v, &pty);
		else if (!strcmp(a, "path")) path = v;
		else if (!strcmp(a, "sigs")) sigs = v;
	}
	char **wargv = argv + i + 1;
	if (i >= argc || !wargv[0] || !path || syncfd < 0)
		return 125;
	sync_out = (int)syncfd;
	/* exec made us dumpable again: nothing in the sandbox may ptrace PID 1
	 * or open its fds (the sync socket). */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	fcntl(sync_out, F_SETFD, FD_CLOEXEC);
	sigemptyset(&fwd_set);
	parse_sigs(sigs, &fwd_set);
	int sfd = take_signals();
	int errp[2];
	if (sfd < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		struct buf m = {.n = 0};
		bs(&m, "{\"kind\":\"error\",\"err\":{\"Step\":\"init\",\"Errno\":");
		bnum(&m, errno);
		bs(&m, ",\"Msg\":\"init: signalfd or pipe: ");
		bjson(&m, errtext(errno));
		bs(&m, "\"}}");
		send_msg(&m);
		return 125;
	}
	pid_t pid = fork();
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (setsid() < 0 || (pty && ioctl(0, TIOCSCTTY, 0) < 0) ||
		    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) {
			int e = errno;
			write_all(errp[1], (char *)&e, sizeof e);
			_exit(127);
		}
		/* Only 0, 1, 2 and the preserved fds reach the workload (the
		 * error pipe closes on exec too). */
		for (long fd = 3; fd < 3 + nfds; fd++)
			fcntl((int)fd, F_SETFD, 0);
		syscall(SYS_close_range, 3 + (unsigned int)nfds, ~0u, 4 /* CLOSE_RANGE_CLOEXEC */);
		execve(path, wargv, environ);
		int e = errno;
		write_all(errp[1], (char *)&e, sizeof e);
		_exit(127);
	}
	close(errp[1]);
	int e = 0;
	if (pid > 0) {
		ssize_t r;
		do
			r = read(errp[0], &e, sizeof e);
		while (r < 0 && errno == EINTR);
		if (r != sizeof e)
			e = 0;
		close(errp[0]);
	} else {
		e = errno;
		close(errp[0]);
	}
	if (pid < 0 || e) {
		if (pid > 0)
			waitpid(pid, NULL, 0);
		struct buf m = {.n = 0};
		bs(&m, "{\"kind\":\"error\",\"err\":{\"Step\":\"exec\",\"Errno\":");
		bnum(&m, e);
		bs(&m, ",\"Msg\":\"exec: exec ");
		bjson(&m, wargv[0]);
		bs(&m, ": ");
		bjson(&m, errtext(e));
		bs(&m, "\"}}");
		send_msg(&m);
		return 125;
	}
	/* The init needs no fds of the caller's. */
	for (long fd = 3; fd < 3 + nfds; fd++)
		if (fd != sync_out && fd != sfd)
			close((int)fd);
	{
		struct buf m = {.n = 0};
		bs(&m, "{\"kind\":\"started\",\"pid\":");
		bnum(&m, pid);
		bs(&m, "}");
		send_msg(&m);
	}
	test_stop("monitor-init");
	int ws = 0;
	for (;;) {
		int done = 0;
		for (;;) {
			int st;
			pid_t r = waitpid(-1, &st, WNOHANG);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			if (r == pid) {
				ws = st;
				done = 1;
				break;
			}
		}
		if (done)
			break;
		struct signalfd_siginfo si;
		if (read(sfd, &si, sizeof si) != sizeof si)
			continue;
		if (si.ssi_signo != SIGCHLD)
			kill(pid, (int)si.ssi_signo);
	}
	struct buf m = {.n = 0};
	bs(&m, "{\"kind\":\"exit\"");
	int code;
	if (WIFSIGNALED(ws)) {
		bs(&m, ",\"signal\":");
		bnum(&m, WTERMSIG(ws));
		code = 128 + WTERMSIG(ws);
	} else {
		code = WEXITSTATUS(ws);
		if (code) {
			bs(&m, ",\"status\":");
			bnum(&m, code);
		}
	}
	bs(&m, "}");
	send_msg(&m);
	return code;
}

int main(int argc, char **argv)
{
	if (argc >= 1 && strcmp(argv[0], "__nsrun-watch") == 0)
		return do_watch();
	if (argc >= 2 && strcmp(argv[1], "__nsrun-supervise") == 0)
		return do_supervise(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "__nsrun-init") == 0)
		return do_init(argc, argv);
	put(2, "nsrun-monitor: run by nsrun only\n");
	(void)nsrun_monitor_marker;
	return 125;
}
