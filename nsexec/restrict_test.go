package nsexec

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// The record of restrictions is sealed: neither the process that keeps it
// nor a reader can change it, and an unsealed look-alike is refused.
func TestRecordIsSealed(t *testing.T) {
	uid := uint32(1000)
	spec := &Spec{Seccomp: SeccompFile, SeccompProgram: []byte{6, 0, 0, 0, 0, 0, 0xff, 0x7f}, Caps: []string{"net_admin"}, UID: &uid}
	rec, err := recordRestrictions(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	if _, err := rec.Write([]byte("x")); err == nil {
		t.Error("wrote to the sealed record")
	}
	if err := rec.Truncate(0); err == nil {
		t.Error("truncated the sealed record")
	}
	if w, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(rec.Fd())), os.O_WRONLY, 0); err == nil {
		if _, err := w.Write([]byte("{}")); err == nil {
			t.Error("wrote to the sealed record through /proc/self/fd")
		}
		w.Close()
	}
	r, err := readRecord(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if r.Seccomp != SeccompFile || string(r.SeccompProgram) != string(spec.SeccompProgram) || len(r.Caps) != 1 || r.Caps[0] != "net_admin" || r.UID == nil || *r.UID != 1000 || r.GID != nil {
		t.Fatalf("read back %+v", r)
	}

	// A second memfd of the same name, not sealed: refused, as is having two.
	fd, err := unix.MemfdCreate(recordName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	fake := os.NewFile(uintptr(fd), "fake")
	defer fake.Close()
	if _, err := fake.WriteString(`{"seccomp":"none"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := readRecord(os.Getpid()); err == nil {
		t.Fatal("two records accepted")
	}
	rec.Close()
	if _, err := readRecord(os.Getpid()); err == nil {
		t.Fatal("an unsealed record accepted")
	}
	fake.Close()
	if _, err := readRecord(os.Getpid()); err != errNoRecord {
		t.Fatalf("no record: %v", err)
	}
}

// joinRestrictions without a record: nsrun's defaults for a process with
// no filter, a refusal for one with a filter nsrun cannot know.
func TestJoinRestrictionsWithoutRecord(t *testing.T) {
	// This test process has no record kept by its parent (go test).
	s := &Spec{Caps: []string{"sys_admin"}, Seccomp: SeccompNone}
	mode, err := seccompOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	err = joinRestrictions(os.Getpid(), s)
	if mode != 0 {
		if err == nil {
			t.Fatal("joined a filtered process without a record")
		}
		return
	}
	if err != nil || s.Seccomp != SeccompDefault || len(s.Caps) != 0 {
		t.Fatalf("without a record: %v, %+v", err, s)
	}
}
