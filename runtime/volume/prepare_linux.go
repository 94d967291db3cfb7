package volume

import (
	"fmt"
	"os"
	"path/filepath"
)

// DirMode is the mode of a volume directory: the payload user owns it, the
// runtime's group (the ExeUnit's, which writes uploads there) shares it,
// and new files inherit that group. Nobody else may enter.
const DirMode = 0o770 | os.ModeSetgid

// Prepare creates, in workdir, the directory of every volume that has one
// and gives it to the payload user uid and the runtime's group, with
// DirMode whatever the umask. Existing directories (a second deploy) are
// kept with their content.
func (l List) Prepare(workdir string, uid int) error {
	gid := os.Getegid()
	for _, v := range l {
		if v.Name == "" {
			continue
		}
		dir := filepath.Join(workdir, v.Name)
		if err := os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
			return fmt.Errorf("volume %s: %w", v.Path, err)
		}
		if err := os.Lchown(dir, uid, gid); err != nil {
			return fmt.Errorf("volume %s: %w", v.Path, err)
		}
		if err := os.Chmod(dir, DirMode); err != nil {
			return fmt.Errorf("volume %s: %w", v.Path, err)
		}
	}
	return nil
}
