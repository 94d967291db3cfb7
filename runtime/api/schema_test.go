package api

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// wireSchema is the schema of docs/protocol.md §3 (yagna's field numbers) transcribed as field number → type
// ("repeated T", "map<K,V>", a scalar kind, or a message/enum full name
// without the package), with "|oneof" for oneof members. Only numbers,
// types and oneof grouping reach the wire, so that is all it pins; the
// vectors cover the rest.
var wireSchema = map[string]map[int]string{
	"Request": {1: "uint64", 2: "Request.Hello|command", 10: "Request.RunProcess|command",
		11: "Request.KillProcess|command", 12: "Request.Shutdown|command", 30: "Request.CreateNetwork|command"},
	"Request.Hello":         {1: "string"},
	"Request.RunProcess":    {1: "string", 2: "repeated string", 3: "string", 4: "Output", 5: "Output"},
	"Request.KillProcess":   {1: "uint64", 2: "int32"},
	"Request.CreateNetwork": {1: "repeated Network", 2: "map<string,string>", 3: "NetworkInterface"},
	"Request.Shutdown":      {},
	"Response": {1: "bool", 2: "uint64", 3: "Response.Error|command", 4: "Response.Hello|command",
		10: "Response.RunProcess|command", 11: "Response.KillProcess|command", 12: "Response.Shutdown|command",
		20: "Response.ProcessStatus|command", 21: "Response.RuntimeStatus|command", 30: "Response.CreateNetwork|command"},
	"Response.Error":                 {1: "Response.ErrorCode", 2: "string", 3: "map<string,string>"},
	"Response.Hello":                 {1: "string"},
	"Response.RunProcess":            {1: "uint64"},
	"Response.KillProcess":           {},
	"Response.Shutdown":              {},
	"Response.ProcessStatus":         {1: "uint64", 2: "bool", 3: "int32", 4: "bytes", 5: "bytes"},
	"Response.RuntimeStatus":         {1: "Response.RuntimeStatus.State|kind", 2: "Response.RuntimeStatus.Counter|kind"},
	"Response.RuntimeStatus.State":   {1: "string", 2: "bytes"},
	"Response.RuntimeStatus.Counter": {1: "string", 2: "double"},
	"Response.CreateNetwork": {1: "string|endpoint", 2: "string|endpoint", 3: "string|endpoint",
		4: "string|endpoint", 5: "string|endpoint"},
	"Network": {1: "string", 2: "string", 3: "string", 4: "string"},
	"Output":  {2: "uint32|mode"},
}

var wireEnums = map[string]map[int32]string{
	"Response.ErrorCode": {0: "INTERNAL", 1: "NOT_FOUND", 2: "BAD_REQUEST"},
	"NetworkInterface":   {0: "VPN", 1: "INET"},
}

const protoPackage = "ya_runtime_api"

func typeOf(fd protoreflect.FieldDescriptor) string {
	name := func(fd protoreflect.FieldDescriptor) string {
		switch fd.Kind() {
		case protoreflect.MessageKind:
			return string(fd.Message().FullName())[len(protoPackage)+1:]
		case protoreflect.EnumKind:
			return string(fd.Enum().FullName())[len(protoPackage)+1:]
		}
		return fd.Kind().String()
	}
	var t string
	switch {
	case fd.IsMap():
		t = fmt.Sprintf("map<%s,%s>", name(fd.MapKey()), name(fd.MapValue()))
	case fd.IsList():
		t = "repeated " + name(fd)
	default:
		t = name(fd)
	}
	// Only real oneofs: proto3 "optional" would change presence semantics.
	if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
		t += "|" + string(od.Name())
	}
	return t
}

func TestSchemaMatchesSpec(t *testing.T) {
	file := File_runtime_api_runtime_proto
	if file.Package() != protoPackage || file.Syntax() != protoreflect.Proto3 {
		t.Fatalf("package %q syntax %v", file.Package(), file.Syntax())
	}

	seen := map[string]bool{}
	var walk func(protoreflect.MessageDescriptors)
	walk = func(msgs protoreflect.MessageDescriptors) {
		for i := range msgs.Len() {
			md := msgs.Get(i)
			if md.IsMapEntry() {
				continue
			}
			name := string(md.FullName())[len(protoPackage)+1:]
			seen[name] = true
			want, ok := wireSchema[name]
			if !ok {
				t.Errorf("message %s is not in the spec", name)
			}
			got := map[int]string{}
			for j := range md.Fields().Len() {
				fd := md.Fields().Get(j)
				got[int(fd.Number())] = typeOf(fd)
			}
			if !maps.Equal(got, want) {
				t.Errorf("%s fields:\n got  %v\n want %v", name, got, want)
			}
			walk(md.Messages())
		}
	}
	walk(file.Messages())
	for name := range wireSchema {
		if !seen[name] {
			t.Errorf("message %s missing", name)
		}
	}

	enums := map[string]protoreflect.EnumDescriptor{}
	for i := range file.Enums().Len() {
		enums[string(file.Enums().Get(i).Name())] = file.Enums().Get(i)
	}
	for i := range file.Messages().Len() {
		md := file.Messages().Get(i)
		for j := range md.Enums().Len() {
			enums[string(md.Name())+"."+string(md.Enums().Get(j).Name())] = md.Enums().Get(j)
		}
	}
	if got, want := slices.Sorted(maps.Keys(enums)), slices.Sorted(maps.Keys(wireEnums)); !slices.Equal(got, want) {
		t.Errorf("enums %v, want %v", got, want)
	}
	for name, ed := range enums {
		got := map[int32]string{}
		for i := range ed.Values().Len() {
			got[int32(ed.Values().Get(i).Number())] = string(ed.Values().Get(i).Name())
		}
		if !maps.Equal(got, wireEnums[name]) {
			t.Errorf("enum %s = %v, want %v", name, got, wireEnums[name])
		}
	}
}
