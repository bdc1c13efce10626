package statd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/nsm/nfsutils"
)

// StateFileName is the file beside the store that keeps the state number
// (nsm.WriteStateFile), so the number survives the loss of the store.
const StateFileName = "statd.state"

// DefaultKernelStatePath is where the kernel's lock manager learns our
// state number (as nfs-utils' statd writes it).
const DefaultKernelStatePath = "/proc/sys/fs/nfs/nsm_local_state"

// resetHint is what an admin can do about a store that cannot be used.
const resetHint = "start rpc.statd once with --reset-store to set it aside and begin a new one " +
	"(its registrations and owed notifications are lost; the state number still moves forward)"

// checkStateDir creates the state directory if it is missing and refuses
// one that someone other than the daemon's user controls: it must be a
// directory (not a symbolic link), owned by root or by the user running
// the daemon, writable by us and by nobody else.
func checkStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		// An admin's link (e.g. to another file system) is fine when root
		// owns it; its target is checked below like any directory.
		if st.Uid != 0 {
			return fmt.Errorf("state directory %s is a symbolic link owned by uid %d: rpc.statd follows only root's links", dir, st.Uid)
		}
		if err := unix.Stat(dir, &st); err != nil {
			return fmt.Errorf("state directory %s: %w", dir, err)
		}
	}
	euid := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("state directory %s is not a directory", dir)
	case st.Uid != euid && st.Uid != 0 && euid != 0:
		return fmt.Errorf("state directory %s is owned by uid %d, not by uid %d which runs rpc.statd: run rpc.statd as root or as its owner", dir, st.Uid, euid)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("state directory %s is writable by group or others (mode %04o): others could replace the store; chmod go-w %s", dir, st.Mode&0o7777, dir)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("state directory %s is not writable by uid %d (owner uid %d, mode %04o): %w", dir, euid, st.Uid, st.Mode&0o7777, err)
	}
	return nil
}

// openStore opens the store in cfg.StateDir, after the checks that keep
// the state number from going backwards: a store that is missing or empty
// while the state file knows a state number, or a damaged one, is an
// error naming the file, unless cfg.ResetStore, which sets the old file
// aside and begins a new store whose state is above the state file's.
// A new store imports cfg.NFSUtilsDir when it holds nfs-utils state.
func openStore(cfg Config, bootID string, log *slog.Logger, opts ...nsm.StoreOption) (*nsm.Store, error) {
	if err := checkStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	path := filepath.Join(cfg.StateDir, StoreFileName)
	statePath := filepath.Join(cfg.StateDir, StateFileName)
	known, haveState, err := nsm.ReadStateFile(statePath)
	if err != nil {
		return nil, fmt.Errorf("%w: remove it only if the store %s is intact", err, path)
	}
	var fi unix.Stat_t
	exists := unix.Lstat(path, &fi) == nil
	if exists && fi.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil, fmt.Errorf("store %s is a symbolic link, which rpc.statd does not follow: remove it", path)
	}
	problem := ""
	var salvaged *nsm.Salvage
	switch {
	case exists && fi.Size == 0:
		problem = "is empty"
	case !exists && haveState:
		problem = "is missing"
	}
	if problem == "" && exists {
		var de *nsm.DamageError
		if err := nsm.CheckStoreFile(path); errors.As(err, &de) {
			problem = "is damaged: " + de.Reason
		} else if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	if problem != "" {
		if !cfg.ResetStore {
			if haveState {
				return nil, fmt.Errorf("store %s %s, but %s says the state number was %d: %s", path, problem, statePath, known, resetHint)
			}
			return nil, fmt.Errorf("store %s %s: %s", path, problem, resetHint)
		}
		if exists {
			aside := path + ".damaged." + strconv.FormatInt(time.Now().Unix(), 10)
			if err := os.Rename(path, aside); err != nil {
				return nil, fmt.Errorf("--reset-store: %w", err)
			}
			log.Warn("store set aside (--reset-store)", "store", path, "problem", problem, "moved_to", aside)
			// Every host the intact pages name is told we restarted, so its
			// locks are reclaimed rather than silently lost.
			if sv, err := nsm.SalvageStore(aside); err == nil && (len(sv.Owed) > 0 || sv.State > 0) {
				salvaged = &sv
				log.Warn("salvaged from the damaged store", "hosts", len(sv.Owed), "state", sv.State, "unreadable", sv.Skipped)
			}
		}
		log.Warn("beginning a new store (--reset-store): registrations and owed notifications are lost", "store", path,
			"state_file_state", known)
		exists = false
	}
	kernel := func(state int32) { writeKernelState(cfg.KernelStatePath, state, log) }
	s, err := nsm.OpenStore(path, append([]nsm.StoreOption{nsm.WithStateFile(statePath), nsm.WithStateHook(kernel)}, opts...)...)
	if err != nil {
		var de *nsm.DamageError
		if errors.As(err, &de) {
			return nil, fmt.Errorf("%w: %s", err, resetHint)
		}
		return nil, err
	}
	if salvaged != nil {
		// The store stays new (no boot recorded): the start is a reboot
		// past the salvaged state, owing every salvaged host.
		if _, err := s.Import(context.Background(), nsm.Import{State: salvaged.State, Owed: salvaged.Owed}); err != nil {
			s.Close()
			return nil, err
		}
	}
	if !exists && cfg.NFSUtilsDir != "" && nfsutils.Exists(cfg.NFSUtilsDir) {
		if _, err := importNFSUtils(context.Background(), s, cfg.NFSUtilsDir, bootID, cfg.BootTime, log); err != nil {
			s.Close()
			os.Remove(path) // nothing of it is acknowledged: the next start imports again
			return nil, err
		}
	}
	return s, nil
}

// ImportSummary says what an import of an nfs-utils directory took.
type ImportSummary struct {
	Dir           string   `json:"dir"`
	State         int32    `json:"nfs_utils_state"`
	StateAfter    int32    `json:"state"`
	Registrations int      `json:"registrations"`
	Owed          int      `json:"owed"`
	ThisBoot      bool     `json:"this_boot"`
	Skipped       []string `json:"skipped,omitempty"`
}

// importNFSUtils reads an nfs-utils state directory into s. Its state is
// taken as written in this boot when the state file (or, without one, sm/)
// changed after the host booted: the next start is then a restart that
// keeps the registrations, as it would have been for nfs-utils' statd;
// otherwise it is a reboot.
func importNFSUtils(ctx context.Context, s *nsm.Store, dir, bootID string, bootTime time.Time, log *slog.Logger) (ImportSummary, error) {
	d, err := nfsutils.Read(dir)
	if err != nil {
		return ImportSummary{}, fmt.Errorf("importing nfs-utils state: %w", err)
	}
	for _, why := range d.Skipped {
		log.Warn("nfs-utils record not imported", "dir", dir, "reason", why)
	}
	if !d.HasState && len(d.Monitors) == 0 && len(d.Notify) == 0 {
		log.Info("nfs-utils state directory holds nothing to import", "dir", dir)
		return ImportSummary{Dir: dir, Skipped: d.Skipped}, nil
	}
	if bootTime.IsZero() {
		bootTime = BootTime()
	}
	thisBoot := false
	for _, n := range []string{"state", "sm"} {
		if fi, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			thisBoot = fi.ModTime().After(bootTime)
			break
		}
	}
	im := nsm.Import{State: d.State, Owed: d.Notify, Now: time.Now(), BootID: "nfs-utils, an earlier boot"}
	if thisBoot && d.HasState {
		im.BootID = bootID
	}
	for _, m := range d.Monitors {
		im.Registrations = append(im.Registrations, nsm.Registration{MonName: m.MonName, MyID: m.MyID, Priv: m.Priv})
	}
	res, err := s.Import(ctx, im)
	if err != nil {
		return ImportSummary{}, fmt.Errorf("importing nfs-utils state from %s: %w", dir, err)
	}
	sum := ImportSummary{Dir: dir, State: d.State, StateAfter: res.State, Registrations: res.Registrations,
		Owed: res.Owed, ThisBoot: im.BootID == bootID, Skipped: d.Skipped}
	log.Info("imported nfs-utils state", "dir", dir, "nfs_utils_state", d.State, "state", res.State,
		"registrations", res.Registrations, "owed", res.Owed, "this_boot", sum.ThisBoot, "skipped", len(d.Skipped))
	return sum, nil
}

// BootTime is when the host booted, from the kernel's uptime.
func BootTime() time.Time {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return time.Time{}
	}
	return time.Now().Add(-time.Duration(si.Uptime) * time.Second)
}

// ImportNFSUtils is `statdctl import DIR`: it opens the store of stateDir
// directly (so rpc.statd must be stopped: the store is locked while it
// runs) and merges the nfs-utils state directory nfsDir into it. The
// running daemon's memory is never bypassed, and the next start loads
// the result like any store.
func ImportNFSUtils(ctx context.Context, stateDir, nfsDir, bootIDPath string, log *slog.Logger) (ImportSummary, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !nfsutils.Exists(nfsDir) {
		return ImportSummary{}, fmt.Errorf("%s holds no nfs-utils state (no state file, no sm directory)", nfsDir)
	}
	bootID, err := ReadBootID(bootIDPath)
	if err != nil {
		return ImportSummary{}, err
	}
	s, err := openStore(Config{StateDir: stateDir}, bootID, log)
	if err != nil {
		return ImportSummary{}, err
	}
	defer s.Close()
	return importNFSUtils(ctx, s, nfsDir, bootID, time.Time{}, log)
}

// writeKernelState tells the kernel's lock manager our state number, when
// path exists (the lockd module is loaded); it is never created.
func writeKernelState(path string, state int32, log *slog.Logger) {
	if path == "" {
		return
	}
	written, err := writeExisting(path, strconv.Itoa(int(state)))
	switch {
	case err != nil:
		log.Warn("cannot tell the kernel our state number", "path", path, "err", err)
	case !written:
		log.Debug("no kernel NSM state file", "path", path)
	}
}

// writeExisting writes s to the file at path when it exists (a kernel
// file under /proc), never creating it or following a symlink.
func writeExisting(path, s string) (written bool, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		return false, err
	}
	return true, nil
}
