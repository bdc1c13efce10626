package statd

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/nsm"
)

// startCfg is a Config for open() in dir with boot id boot.
func startCfg(t *testing.T, dir, boot string) Config {
	t.Helper()
	bootFile := filepath.Join(t.TempDir(), "boot_id")
	writeBootID(t, bootFile, boot)
	return Config{Name: "me.example.com", StateDir: dir, BootIDPath: bootFile}
}

// openDaemon runs the start-up step and returns its result, closing
// everything again.
func openDaemon(t *testing.T, cfg Config) (nsm.StartResult, error) {
	t.Helper()
	d, res, err := open(cfg, false)
	if err != nil {
		return res, err
	}
	d.mux.Close()
	d.store.Close()
	return res, nil
}

func mustOpen(t *testing.T, cfg Config) nsm.StartResult {
	t.Helper()
	res, err := openDaemon(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// withStore leaves a started store with state 5 (three reboots) and one
// registration in dir.
func withStore(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	for _, b := range []string{"boot-1", "boot-2", "boot-3"} {
		mustOpen(t, startCfg(t, dir, b))
	}
	s, err := nsm.OpenStore(filepath.Join(dir, StoreFileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Monitor(context.Background(), nsm.Registration{MonName: "client", MyID: nsm.MyID{Name: "me", Prog: 100021, Vers: 4, Proc: 16}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	return dir
}

// TestEmptyStoreWithStateFileRefused: a store truncated to nothing, while
// the state file remembers state 5, is an error naming the file, what is
// wrong and what to do (old main took it as new and went 5 → 1).
func TestEmptyStoreWithStateFileRefused(t *testing.T) {
	dir := withStore(t)
	db := filepath.Join(dir, StoreFileName)
	for _, damage := range []func() error{
		func() error { return os.Truncate(db, 0) },
		func() error { return os.Remove(db) },
	} {
		if err := damage(); err != nil {
			t.Fatal(err)
		}
		_, err := openDaemon(t, startCfg(t, dir, "boot-3"))
		if err == nil || !strings.Contains(err.Error(), db) || !strings.Contains(err.Error(), "state number was 5") ||
			!strings.Contains(err.Error(), "--reset-store") {
			t.Fatalf("open with a lost store: %v", err)
		}
	}
}

// TestResetStoreMovesForward: --reset-store sets a damaged store aside and
// the state still moves on from the state file's, even in the same boot.
func TestResetStoreMovesForward(t *testing.T) {
	dir := withStore(t)
	db := filepath.Join(dir, StoreFileName)
	if err := os.WriteFile(db, []byte(strings.Repeat("x", 8192)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openDaemon(t, startCfg(t, dir, "boot-3")); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged store opened: %v", err)
	}
	cfg := startCfg(t, dir, "boot-3")
	cfg.ResetStore = true
	res := mustOpen(t, cfg)
	if res.State != 7 || !res.Rebooted {
		t.Fatalf("after --reset-store: %+v; want a reboot to state 7", res)
	}
	aside, _ := filepath.Glob(db + ".damaged.*")
	if len(aside) != 1 {
		t.Fatalf("damaged store not set aside: %q", aside)
	}
	if st, ok, err := nsm.ReadStateFile(filepath.Join(dir, StateFileName)); err != nil || !ok || st != 7 {
		t.Fatalf("state file %d %v %v; want 7", st, ok, err)
	}
}

// TestResetStoreSalvages: --reset-store on a store whose registrations
// page is unreadable still tells every host it can read of the restart.
func TestResetStoreSalvages(t *testing.T) {
	dir := withStore(t) // state 5, client monitored
	db := filepath.Join(dir, StoreFileName)
	b, _ := os.ReadFile(db)
	ps := os.Getpagesize()
	// Truncate inside the pages in use: the check refuses the file, the
	// salvage reads the pages that are left.
	hwm := binary.NativeEndian.Uint64(b[16+40:])
	if h1 := binary.NativeEndian.Uint64(b[ps+16+40:]); h1 > hwm {
		hwm = h1
	}
	os.WriteFile(db, b[:int(hwm)*ps-ps/2], 0o600)
	cfg := startCfg(t, dir, "boot-3")
	cfg.ResetStore = true
	res := mustOpen(t, cfg)
	if !res.Rebooted || res.State != 7 {
		t.Fatalf("after --reset-store: %+v; want a reboot to 7", res)
	}
	if res.Owed != 1 {
		t.Fatalf("%d hosts owed after the salvage; want 1 (client)", res.Owed)
	}
}

// TestDamagedStoreOneLine: damage gives one line naming the file, the
// damage and the remedy.
func TestDamagedStoreOneLine(t *testing.T) {
	dir := withStore(t)
	db := filepath.Join(dir, StoreFileName)
	b, _ := os.ReadFile(db)
	ps := os.Getpagesize()
	b[16] ^= 0xff
	b[ps+16] ^= 0xff // both meta pages
	os.WriteFile(db, b, 0o600)
	_, err := openDaemon(t, startCfg(t, dir, "boot-3"))
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), db) ||
		!strings.Contains(err.Error(), "no valid meta page") || !strings.Contains(err.Error(), "--reset-store") {
		t.Fatalf("open of a damaged store: %v", err)
	}
}

// TestStateFileIsAFloor: the state file wins over a store that is behind
// it (a commit lost after the file was written).
func TestStateFileIsAFloor(t *testing.T) {
	dir := withStore(t)
	if err := nsm.WriteStateFile(filepath.Join(dir, StateFileName), 41); err != nil {
		t.Fatal(err)
	}
	if res := mustOpen(t, startCfg(t, dir, "boot-4")); res.State != 43 {
		t.Fatalf("state %d after the file said 41; want 43", res.State)
	}
}

// TestStateDirWritableByOthersRefused: old main accepted it.
func TestStateDirWritableByOthersRefused(t *testing.T) {
	dir := withStore(t)
	for _, mode := range []os.FileMode{0o777, 0o722, 0o702} {
		os.Chmod(dir, mode)
		if _, err := openDaemon(t, startCfg(t, dir, "boot-3")); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
			t.Errorf("mode %o: %v", mode, err)
		}
	}
	os.Chmod(dir, 0o700)
	mustOpen(t, startCfg(t, dir, "boot-3"))
}

// TestStoreSymlinkRefused: a symbolic link at the store's name (as another
// user could leave in a shared directory) is not followed: old main
// created a root-owned file where it pointed.
func TestStoreSymlinkRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	os.Mkdir(dir, 0o700)
	target := filepath.Join(t.TempDir(), "victim")
	if err := os.Symlink(target, filepath.Join(dir, StoreFileName)); err != nil {
		t.Fatal(err)
	}
	if _, err := openDaemon(t, startCfg(t, dir, "boot-1")); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("open: %v", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the link's target was created: %v", err)
	}
}

// TestKernelStateWritten: the state number reaches the kernel's file
// when it exists, as nfs-utils writes /proc/sys/fs/nfs/nsm_local_state.
func TestKernelStateWritten(t *testing.T) {
	kfile := filepath.Join(t.TempDir(), "nsm_local_state")
	os.WriteFile(kfile, []byte("0"), 0o644)
	cfg := startCfg(t, filepath.Join(t.TempDir(), "state"), "boot-1")
	cfg.KernelStatePath = kfile
	res := mustOpen(t, cfg)
	if b, _ := os.ReadFile(kfile); string(b) != "1" || res.State != 1 {
		t.Fatalf("kernel file %q after state %d", b, res.State)
	}
	// SM_SIMU_CRASH's new state reaches it too.
	d, _, err := open(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	rd, st, err := d.proto.core.SimuCrash(time.Now())
	if err == nil {
		err = d.proto.commit(context.Background(), rd.Persist)
	}
	d.mux.Close()
	d.store.Close()
	if b, _ := os.ReadFile(kfile); err != nil || string(b) != "3" || st != 3 {
		t.Fatalf("kernel file %q after a simulated crash to %d (%v)", b, st, err)
	}
	cfg.KernelStatePath = filepath.Join(t.TempDir(), "absent")
	mustOpen(t, cfg)
	if _, err := os.Stat(cfg.KernelStatePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing kernel file was created: %v", err)
	}
}

// nfsUtilsDir lays out an nfs-utils state directory: state, sm/ with two
// registrations of client-1 and one of 10.0.0.7, sm.bak/ owing client-9.
func nfsUtilsDir(t *testing.T, state uint32) string {
	t.Helper()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "sm"), 0o700)
	os.Mkdir(filepath.Join(dir, "sm.bak"), 0o700)
	os.WriteFile(filepath.Join(dir, "state"), binary.NativeEndian.AppendUint32(nil, state), 0o644)
	os.WriteFile(filepath.Join(dir, "sm", "client-1"), []byte(
		"0100007f 000186b5 00000004 00000010 0102030405060708090a0b0c0d0e0f10 client-1 server\n"+
			"0100007f 000186b5 00000003 00000010 1102030405060708090a0b0c0d0e0f10 client-1 server\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "sm", "10.0.0.7"), []byte(
		"0100007f 000186b5 00000004 00000010 2102030405060708090a0b0c0d0e0f10 10.0.0.7 server\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "sm.bak", "client-9"), []byte(
		"0100007f 000186b5 00000004 00000010 3102030405060708090a0b0c0d0e0f10 client-9 server\n"), 0o600)
	return dir
}

// TestImportThisBoot: nfs-utils ran in this boot; a new store takes its
// registrations with their priv, owes client-9, and keeps the state (a
// restart, as for nfs-utils' own statd restarting).
func TestImportThisBoot(t *testing.T) {
	nfs := nfsUtilsDir(t, 9)
	cfg := startCfg(t, filepath.Join(t.TempDir(), "state"), "boot-1")
	cfg.NFSUtilsDir = nfs
	cfg.BootTime = time.Now().Add(-time.Hour)
	res := mustOpen(t, cfg)
	if res.State != 9 || res.Rebooted || res.Owed != 1 {
		t.Fatalf("start after import: %+v; want state 9, no reboot, 1 owed", res)
	}
	s, err := nsm.OpenStore(filepath.Join(cfg.StateDir, StoreFileName))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	regs, _ := s.Registrations()
	if len(regs) != 3 || regs[1].MonName != "client-1" || regs[1].Priv[0] != 0x01 && regs[1].Priv[0] != 0x11 || regs[0].MonName != "10.0.0.7" || regs[0].Priv[0] != 0x21 {
		t.Fatalf("registrations %+v", regs)
	}
	owed, _ := s.Owed()
	if len(owed) != 1 || owed[0].Host != "client-9" || owed[0].State != 9 {
		t.Fatalf("owed %+v", owed)
	}
}

// TestImportEarlierBoot: nfs-utils' files predate this boot: the start
// is a reboot past nfs-utils' state, owing every host it monitored.
func TestImportEarlierBoot(t *testing.T) {
	nfs := nfsUtilsDir(t, 10)
	cfg := startCfg(t, filepath.Join(t.TempDir(), "state"), "boot-1")
	cfg.NFSUtilsDir = nfs
	cfg.BootTime = time.Now().Add(time.Hour) // every file is older
	res := mustOpen(t, cfg)
	if res.State != 11 || !res.Rebooted || res.Owed != 3 || res.Dropped != 3 {
		t.Fatalf("start after import: %+v; want a reboot to 11 owing 3 hosts", res)
	}
	// A second start does not import again.
	if res := mustOpen(t, cfg); res.State != 11 || res.Rebooted {
		t.Fatalf("second start: %+v", res)
	}
}

// TestImportWhileRunningRefused: statdctl import opens the store itself,
// so a running daemon (holding the store) makes it fail and say why.
func TestImportWhileRunningRefused(t *testing.T) {
	dir := withStore(t)
	s, err := nsm.OpenStore(filepath.Join(dir, StoreFileName))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bootFile := filepath.Join(t.TempDir(), "boot_id")
	writeBootID(t, bootFile, "boot-3")
	_, err = ImportNFSUtils(context.Background(), dir, nfsUtilsDir(t, 3), bootFile, nil)
	if err == nil || !strings.Contains(err.Error(), "is rpc.statd already running") {
		t.Fatalf("import into a store in use: %v", err)
	}
}

// TestImportNothing: an nfs-utils directory with empty sm/ and sm.bak/
// and no state (a fresh nfs-common install) leaves the start a new store's.
func TestImportNothing(t *testing.T) {
	nfs := t.TempDir()
	os.Mkdir(filepath.Join(nfs, "sm"), 0o700)
	os.Mkdir(filepath.Join(nfs, "sm.bak"), 0o700)
	cfg := startCfg(t, filepath.Join(t.TempDir(), "state"), "boot-1")
	cfg.NFSUtilsDir = nfs
	if res := mustOpen(t, cfg); res.State != 1 || res.Reason != "new store" {
		t.Fatalf("start: %+v", res)
	}
}
