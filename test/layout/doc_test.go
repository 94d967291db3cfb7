package layout

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// readDoc returns docs/architecture.md.
func readDoc(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// layerTable returns the rows of the layer table.
func layerTable(doc string) []string {
	i := strings.Index(doc, "| layer | packages |")
	if i < 0 {
		return nil
	}
	var rows []string
	for _, line := range strings.Split(doc[i:], "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		rows = append(rows, line)
	}
	return rows
}

// TestLayerTableListsEveryPackage: each package of the module is named in
// the layer table's packages column, so the table says where it stands.
func TestLayerTableListsEveryPackage(t *testing.T) {
	pkgs, root := load(t)
	rows := layerTable(readDoc(t, root))
	if len(rows) == 0 {
		t.Fatal("docs/architecture.md has no layer table (| layer | packages | …)")
	}
	named := map[string]bool{}
	for _, row := range rows {
		cells := strings.Split(row, "|")
		if len(cells) < 4 {
			continue
		}
		for _, m := range regexp.MustCompile("`([a-z0-9/-]+)`").FindAllStringSubmatch(cells[2], -1) {
			named[m[1]] = true
		}
	}
	for _, p := range pkgs {
		if !named[p.path] {
			t.Errorf("package %s is not in docs/architecture.md's layer table", p.path)
		}
	}
}

// symbols are the module's declarations by package name (several packages
// may share one: agent): top-level names, and for each type its methods
// and fields.
type symbols struct {
	top     map[string]bool     // "pkg.Name"
	members map[string]bool     // "pkg.Type.Member"
	embeds  map[string][]string // "pkg.Type" → "pkg.Embedded" of the same package
	pkgs    map[string]bool     // package names
}

// has reports whether name ("pkg.Name" or "pkg.Type.Member") is declared;
// a member may be promoted from an embedded type.
func (s symbols) has(name string) bool {
	parts := strings.Split(name, ".")
	if len(parts) == 2 {
		return s.top[name]
	}
	seen := map[string]bool{}
	var find func(typ string) bool
	find = func(typ string) bool {
		if seen[typ] {
			return false
		}
		seen[typ] = true
		if s.members[typ+"."+parts[2]] {
			return true
		}
		return slices.ContainsFunc(s.embeds[typ], find)
	}
	return find(parts[0] + "." + parts[1])
}

// parseModule reads every non-test Go file of the module with go/parser
// (declarations only, no type checking: fast and root-free).
func parseModule(t *testing.T, root string) symbols {
	t.Helper()
	s := symbols{top: map[string]bool{}, members: map[string]bool{}, embeds: map[string][]string{}, pkgs: map[string]bool{}}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		pkg := f.Name.Name
		s.pkgs[pkg] = true
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil || len(d.Recv.List) == 0 {
					s.top[pkg+"."+d.Name.Name] = true
					continue
				}
				typ := d.Recv.List[0].Type
				if st, ok := typ.(*ast.StarExpr); ok {
					typ = st.X
				}
				if ix, ok := typ.(*ast.IndexExpr); ok { // a generic receiver
					typ = ix.X
				}
				if id, ok := typ.(*ast.Ident); ok {
					s.members[pkg+"."+id.Name+"."+d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch sp := spec.(type) {
					case *ast.TypeSpec:
						s.top[pkg+"."+sp.Name.Name] = true
						if st, ok := sp.Type.(*ast.StructType); ok {
							for _, fld := range st.Fields.List {
								for _, n := range fld.Names {
									s.members[pkg+"."+sp.Name.Name+"."+n.Name] = true
								}
								if len(fld.Names) == 0 { // embedded: its members are promoted
									e := embeddedName(fld.Type)
									s.members[pkg+"."+sp.Name.Name+"."+e] = true
									s.embeds[pkg+"."+sp.Name.Name] = append(s.embeds[pkg+"."+sp.Name.Name], pkg+"."+e)
								}
							}
						}
					case *ast.ValueSpec:
						for _, n := range sp.Names {
							s.top[pkg+"."+n.Name] = true
						}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func embeddedName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.StarExpr:
		return embeddedName(x.X)
	case *ast.SelectorExpr:
		return x.Sel.Name
	case *ast.Ident:
		return x.Name
	}
	return ""
}

// docSymbol matches a Go symbol in backquotes: pkg.Name, pkg.Type.Member or
// pkg.(*Type).Method.
var docSymbol = regexp.MustCompile("`([a-z][a-z0-9]*)\\.(?:\\(\\*([A-Z][A-Za-z0-9_]*)\\)\\.([A-Za-z_][A-Za-z0-9_]*)|([A-Z][A-Za-z0-9_]*)(?:\\.([A-Za-z_][A-Za-z0-9_]*))?)`")

// docSymbols returns the symbols doc names, as "pkg.Name" or
// "pkg.Type.Member".
func docSymbols(doc string) []string {
	var out []string
	for _, m := range docSymbol.FindAllStringSubmatch(doc, -1) {
		switch {
		case m[2] != "":
			out = append(out, m[1]+"."+m[2]+"."+m[3])
		case m[5] != "":
			out = append(out, m[1]+"."+m[4]+"."+m[5])
		default:
			out = append(out, m[1]+"."+m[4])
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestArchitectureSymbolsExist: every Go symbol docs/architecture.md names
// (`pump.(*Pump).run`, `offload.(*Splitter).Next`, `link.Counters`, …)
// is declared in the module, so the page's frame walks stay true when code
// moves.
func TestArchitectureSymbolsExist(t *testing.T) {
	_, root := load(t)
	doc := readDoc(t, root)
	syms := parseModule(t, root)
	names := docSymbols(doc)
	if len(names) < 20 {
		t.Fatalf("found only %d symbols in docs/architecture.md (%v): is the pattern broken?", len(names), names)
	}
	for _, n := range names {
		if pkg, _, _ := strings.Cut(n, "."); !syms.pkgs[pkg] {
			continue // the standard library's (net.ErrClosed)
		}
		if !syms.has(n) {
			t.Errorf("docs/architecture.md names %s, which the module does not declare", n)
		}
	}
	// The check can fail.
	for _, bad := range []string{"`pump.(*Pump).gone`", "`offload.Nothing`", "`link.Link.Fly`"} {
		for _, n := range docSymbols(bad) {
			if syms.has(n) {
				t.Errorf("%s is reported as declared", bad)
			}
		}
	}
}
