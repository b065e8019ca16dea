package podsocket

import "testing"

func TestOptionsFromEnv(t *testing.T) {
	t.Setenv(EnvControlGID, "")
	o, err := OptionsFromEnv()
	if err != nil || o.Config.ControlGroup != nil || o.WebhookName != WebhookName || o.Path != Path {
		t.Fatalf("unset: %+v %v", o, err)
	}
	t.Setenv(EnvControlGID, "2360")
	if o, err := OptionsFromEnv(); err != nil || o.Config.ControlGroup == nil || *o.Config.ControlGroup != 2360 {
		t.Fatalf("2360: %+v %v", o, err)
	}
	for _, bad := range []string{"-1", "spright", "1.5"} {
		t.Setenv(EnvControlGID, bad)
		if _, err := OptionsFromEnv(); err == nil {
			t.Errorf("%s=%q accepted", EnvControlGID, bad)
		}
	}

	t.Setenv(EnvServiceName, "")
	t.Setenv("WEBHOOK_SECRET_NAME", "")
	t.Setenv("WEBHOOK_PORT", "")
	w := WebhookOptionsFromEnv()
	if w.ServiceName != DefaultServiceName || w.SecretName != DefaultSecretName || w.Port != DefaultPort {
		t.Errorf("defaults: %+v", w)
	}
}
